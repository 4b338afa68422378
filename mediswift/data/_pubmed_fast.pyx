# cython: language_level=3, boundscheck=False, wraparound=False
"""The PubMed parser's field reading in C (optional, as `_pmc_fast`: `pubmed.py` runs its Python
path where this module was not built or was built against another lxml, see `helpers.py`).

`article_fields` walks one `PubmedArticle` in the libxml2 tree and returns the raw strings
`citation_document` reads, taking the first child of each name as it does; `pubmed.py` turns
them into the Document with the same functions as its Python path. The Python path reads a dozen
children through lxml proxies (an object and a tag string each): ~17 us a record, against the
bare iterparse floor's ~11 for three fields. tests/test_pubmed.py runs both paths and compares
them on every record of the mirror.
"""

from libc.string cimport strcmp

cimport lxml.includes.etreepublic as cetree
from lxml.includes.tree cimport xmlAttr, xmlDoc, xmlNode

cdef extern from "lxml-version.h":
    const char* LXML_VERSION_STRING

cetree.import_lxml__etree()
LXML_VERSION = LXML_VERSION_STRING.decode()

cdef int ELEMENT = 1, TEXT = 3, CDATA = 4  # libxml2's node types


cdef inline bint named(xmlNode* n, const char* name):
    """An element `name` in no namespace: what `child.tag == name` tests."""
    return n.type == ELEMENT and n.ns == NULL and strcmp(<const char*>n.name, name) == 0


cdef xmlNode* first(xmlNode* parent, const char* name):
    cdef xmlNode* c = parent.children
    while c != NULL and not named(c, name):
        c = c.next
    return c


cdef object leading_text(xmlNode* n):
    """lxml's `.text`: the text (and CDATA) before the first other child, or None."""
    cdef xmlNode* c = n.children
    parts = []
    while c != NULL and (c.type == TEXT or c.type == CDATA):
        if c.content != NULL:
            parts.append((<bytes>c.content).decode())
        c = c.next
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else "".join(parts)


cdef void gather(xmlNode* n, list parts):
    cdef xmlNode* c = n.children
    while c != NULL:
        if (c.type == TEXT or c.type == CDATA) and c.content != NULL:
            parts.append(<bytes>c.content)
        elif c.type == ELEMENT:
            gather(c, parts)
        c = c.next


cdef object all_text(xmlNode* n):
    """The text `text_of` reads before squeezing it: every text node below `n` (its `.text`
    where it has no child, else what `tostring(method="text")` writes: comments left out)."""
    parts = []
    gather(n, parts)
    return b"".join(parts).decode()


cdef object attribute(xmlNode* n, const char* name):
    """`.get(name)` of an attribute in no namespace (defaults from a DTD excepted: a document
    whose DTD declares attributes is read by the Python path, see `article_fields`)."""
    cdef xmlAttr* a = n.properties
    while a != NULL:
        if a.ns == NULL and strcmp(<const char*>a.name, name) == 0:
            parts = []
            gather(<xmlNode*>a, parts)
            return b"".join(parts).decode()
        a = a.next
    return None


cdef object child_texts(xmlNode* n, tuple names):
    """`_child_texts(n, *names)`."""
    texts = [None] * len(names)
    cdef xmlNode* c = n.children
    while c != NULL:
        if c.type == ELEMENT and c.ns == NULL:
            name = (<bytes>c.name).decode()
            if name in names:
                i = names.index(name)
                if texts[i] is None:
                    texts[i] = leading_text(c) or ""
        c = c.next
    return texts


cdef xmlNode* pub_date(xmlNode* journal):
    """`_pub_date`: `JournalIssue/PubDate`, the first in document order."""
    cdef xmlNode* issue = journal.children
    cdef xmlNode* date
    while issue != NULL:
        if named(issue, b"JournalIssue"):
            date = first(issue, b"PubDate")
            if date != NULL:
                return date
        issue = issue.next
    return NULL


def article_fields(cetree._Element record):
    """The raw fields of one `PubmedArticle`, or None where the Python path must read it (no
    `MedlineCitation`, which it reports, or a DTD that declares attributes, whose defaults
    lxml's `.get` returns). A tuple: PMID text, its Version, whether there is an Article; then
    title, vernacular title (their text, None without the element), the abstract's parts
    ((Label, text) of each AbstractText; None without an Abstract), the issue date's Year and
    MedlineDate texts, the electronic date's Year text, language, publication types, the
    ELocationID DOI, DateRevised's Year, Month and Day texts (None without it), and the first
    PMC id and DOI of the ArticleIdList with a text."""
    cdef xmlDoc* doc = record._doc._c_doc
    if doc.intSubset != NULL and doc.intSubset.attributes != NULL:
        return None
    cdef xmlNode* citation = first(record._c_node, b"MedlineCitation")
    if citation == NULL:
        return None
    cdef xmlNode* pmid = NULL
    cdef xmlNode* article = NULL
    cdef xmlNode* revised = NULL
    cdef xmlNode* c = citation.children
    while c != NULL and (pmid == NULL or article == NULL or revised == NULL):
        if pmid == NULL and named(c, b"PMID"):
            pmid = c
        elif article == NULL and named(c, b"Article"):
            article = c
        elif revised == NULL and named(c, b"DateRevised"):
            revised = c
        c = c.next
    pmid_text = version = None
    if pmid != NULL:
        pmid_text, version = leading_text(pmid), attribute(pmid, b"Version")
    if article == NULL:
        return (pmid_text, version, False) + (None,) * 12
    cdef xmlNode* title = NULL
    cdef xmlNode* vernacular = NULL
    cdef xmlNode* abstract = NULL
    cdef xmlNode* date = NULL
    cdef xmlNode* t
    e_year = language = doi = None
    pub_types = []
    c = article.children
    while c != NULL:
        if c.type == ELEMENT and c.ns == NULL:
            if title == NULL and named(c, b"ArticleTitle"):
                title = c
            elif abstract == NULL and named(c, b"Abstract"):
                abstract = c
            elif date == NULL and named(c, b"Journal"):
                date = pub_date(c)
            elif doi is None and named(c, b"ELocationID"):
                text = leading_text(c)
                if text and attribute(c, b"EIdType") == "doi":
                    doi = text.strip()
            elif language is None and named(c, b"Language"):
                language = leading_text(c) or ""
            elif named(c, b"PublicationTypeList"):
                t = c.children
                while t != NULL:
                    if named(t, b"PublicationType"):
                        text = leading_text(t)
                        if text:
                            pub_types.append(text)
                    t = t.next
            elif vernacular == NULL and named(c, b"VernacularTitle"):
                vernacular = c
            elif e_year is None and named(c, b"ArticleDate"):
                t = first(c, b"Year")
                if t != NULL:
                    e_year = leading_text(t) or ""
        c = c.next
    parts = None
    if abstract != NULL:
        parts = []
        c = abstract.children
        while c != NULL:
            if named(c, b"AbstractText"):
                parts.append((attribute(c, b"Label"), all_text(c)))
            c = c.next
    issue = child_texts(date, ("Year", "MedlineDate")) if date != NULL else [None, None]
    dates = child_texts(revised, ("Year", "Month", "Day")) if revised != NULL else None
    pmc = id_doi = None
    cdef xmlNode* ids
    cdef xmlNode* record_data = first(record._c_node, b"PubmedData")
    if record_data != NULL:
        ids = record_data.children
        while ids != NULL:
            if named(ids, b"ArticleIdList"):
                c = ids.children
                while c != NULL:
                    if named(c, b"ArticleId"):
                        kind, text = attribute(c, b"IdType"), leading_text(c)
                        if kind == "pmc" and pmc is None and text:
                            pmc = text.strip()
                        elif kind == "doi" and id_doi is None and text:
                            id_doi = text.strip()
                    c = c.next
            ids = ids.next
    return (
        pmid_text, version, True,
        None if title == NULL else all_text(title),
        None if vernacular == NULL else all_text(vernacular),
        parts, issue[0], issue[1], e_year, language, pub_types, doi, dates, pmc, id_doi,
    )
