# cython: language_level=3, boundscheck=False, wraparound=False
"""The PMC parser's hot steps in C (optional: `pmc.py` runs its Python path where this module
was not built or was built against another lxml). Each function gives exactly what its Python
counterpart in `pmc.py` gives; tests/test_pmc_body.py runs every real article and every edge
case through both.

- `body_text`: the body stylesheet's output (`_BODY_XSL`), by one walk of the libxml2 tree
  (libxslt spends ~30 ns a node on template dispatch; the walk, a switch on the name).
- `count`: `_count` without an lxml proxy per counted element.
- `lines`: `_lines`, with the separators and whitespace runs found by memmem/memchr.
- `cuttable`: `_cuttable`, jumping from `<` to `<` with memchr.

Measured in one process over the mirror's Cloud Service articles: ~665 -> ~500 us an article.
The element struct is read through lxml's public C API, so the module is tied to the lxml it was
compiled against: `LXML_VERSION` says which, and `helpers.load_helper` uses it only with that one.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, strcmp, strlen

cimport lxml.includes.etreepublic as cetree
from lxml.includes.tree cimport xmlNode

cdef extern from "string.h":
    void* memchr(const void* s, int c, size_t n)
    void* memmem(const void* haystack, size_t hl, const void* needle, size_t nl)

cdef extern from "lxml-version.h":
    const char* LXML_VERSION_STRING

cetree.import_lxml__etree()
LXML_VERSION = LXML_VERSION_STRING.decode()

cdef const char* SEP = b"\xee\x80\x80\xee\x80\x81"  # pmc.SEP in UTF-8
cdef Py_ssize_t SEP_LEN = 6
cdef const char* MATHML = b"http://www.w3.org/1998/Math/MathML"
cdef int ELEMENT = 1, TEXT = 3, CDATA = 4  # libxml2's node types

# ------------------------------------------------------------------------------- body_text

cdef enum Kind:
    OTHER, LEFT_OUT, BLOCK, FLOAT, CAPTION, LABEL, TITLE, SEC, BODY, BACK, FLOATS_GROUP


cdef inline bint _is(const char* a, const char* b):
    return strcmp(a, b) == 0


cdef Kind kind(xmlNode* n):
    """What the stylesheet's patterns make of an element: names in no namespace (as the
    patterns' are), but `mml:math`. Left out: pmc.STRIP_TAGS."""
    cdef const char* s = <const char*>n.name
    if n.ns != NULL and n.ns.href != NULL:
        return LEFT_OUT if _is(s, b"math") and _is(<const char*>n.ns.href, MATHML) else OTHER
    cdef char c = s[0]
    if c == b"p":
        if s[1] == 0:
            return BLOCK
        if _is(s, b"permissions") or _is(s, b"preformat"):
            return LEFT_OUT
    elif c == b"t":
        if _is(s, b"title"):
            return TITLE
        if _is(s, b"table-wrap"):
            return FLOAT
        if _is(s, b"table") or _is(s, b"table-wrap-foot") or _is(s, b"tex-math"):
            return LEFT_OUT
    elif c == b"s":
        if _is(s, b"sec"):
            return SEC
        if _is(s, b"statement"):
            return BLOCK
        if _is(s, b"supplementary-material") or _is(s, b"sub-article") or _is(s, b"sec-meta"):
            return LEFT_OUT
    elif c == b"f":
        if _is(s, b"fig"):
            return FLOAT
        if _is(s, b"fn") or _is(s, b"fn-group"):
            return LEFT_OUT
        if _is(s, b"floats-group"):
            return FLOATS_GROUP
    elif c == b"l":
        if _is(s, b"label"):
            return LABEL
        if _is(s, b"list-item"):
            return BLOCK
        if _is(s, b"long-desc"):
            return LEFT_OUT
    elif c == b"d":
        if _is(s, b"disp-quote") or _is(s, b"def-item"):
            return BLOCK
        if _is(s, b"disp-formula"):
            return LEFT_OUT
    elif c == b"b":
        if _is(s, b"boxed-text"):
            return BLOCK
        if _is(s, b"body"):
            return BODY
        if _is(s, b"back"):
            return BACK
    elif c == b"c":
        if _is(s, b"caption"):
            return CAPTION
        if _is(s, b"code"):
            return LEFT_OUT
    elif c == b"a":
        if _is(s, b"alternatives") or _is(s, b"alt-text") or _is(s, b"attrib"):
            return LEFT_OUT
    elif c == b"i":
        if _is(s, b"inline-formula") or _is(s, b"inline-graphic"):
            return LEFT_OUT
    elif c == b"g":
        if _is(s, b"graphic"):
            return LEFT_OUT
    elif c == b"m":
        if _is(s, b"media"):
            return LEFT_OUT
    elif c == b"r":
        if _is(s, b"ref-list"):
            return LEFT_OUT
    elif c == b"o":
        if _is(s, b"object-id"):
            return LEFT_OUT
    return OTHER


cdef struct Out:
    char* data
    Py_ssize_t size
    Py_ssize_t cap


cdef int put(Out* out, const char* s, Py_ssize_t n) except -1:
    cdef char* grown
    if out.size + n > out.cap:
        while out.size + n > out.cap:
            out.cap *= 2
        grown = <char*>realloc(out.data, out.cap)
        if grown == NULL:
            raise MemoryError()
        out.data = grown
    memcpy(out.data + out.size, s, n)
    out.size += n
    return 0


cdef inline bint parent_is(xmlNode* n, Kind k):
    return n.parent != NULL and n.parent.type == ELEMENT and kind(n.parent) == k


cdef int children(Out* out, xmlNode* parent, bint caption_mode) except -1:
    """`<xsl:apply-templates/>`: text copied, elements by their rules."""
    cdef xmlNode* c = parent.children
    while c != NULL:
        if c.type == TEXT or c.type == CDATA:
            if c.content != NULL:
                put(out, <const char*>c.content, strlen(<const char*>c.content))
        elif c.type == ELEMENT:
            element(out, c, caption_mode)
        c = c.next
    return 0


cdef int element(Out* out, xmlNode* n, bint caption_mode) except -1:
    """The rule the stylesheet applies to `n`, in its default or `caption` mode."""
    cdef Kind k = kind(n)
    cdef xmlNode* c
    if k == LEFT_OUT:
        return 0
    if caption_mode or (k == FLOAT and parent_is(n, CAPTION)):  # caption/fig: as a caption's child
        children(out, n, False)
        put(out, b" ", 1)
    elif k == FLOAT:
        put(out, SEP, SEP_LEN)
        c = n.children
        while c != NULL:
            if c.type == ELEMENT and kind(c) == LABEL:
                element(out, c, False)
            c = c.next
        put(out, b" ", 1)
        c = n.children
        while c != NULL:
            if c.type == ELEMENT and kind(c) == CAPTION:
                children(out, c, True)
            c = c.next
        put(out, SEP, SEP_LEN)
    elif k == CAPTION:
        children(out, n, True)
    elif k == LABEL and parent_is(n, SEC):
        put(out, SEP, SEP_LEN)
        children(out, n, False)
        put(out, b" ", 1)
    elif k == TITLE and parent_is(n, SEC):
        c = n.parent.children
        while c != NULL and not (c.type == ELEMENT and kind(c) == LABEL):
            c = c.next
        if c == NULL:  # not(../label)
            put(out, SEP, SEP_LEN)
        children(out, n, False)
        put(out, SEP, SEP_LEN)
    elif k == BLOCK:
        put(out, SEP, SEP_LEN)
        children(out, n, False)
        put(out, SEP, SEP_LEN)
    else:
        children(out, n, False)
    return 0


cdef int floats(Out* out, xmlNode* n) except -1:
    """Every figure and table below `n`, in document order, each by its own rule (also those
    inside another float or a left-out element: the stylesheet selects them all)."""
    cdef xmlNode* c = n.children
    while c != NULL:
        if c.type == ELEMENT:
            if kind(c) == FLOAT:
                element(out, c, False)
            floats(out, c)
        c = c.next
    return 0


def body_text(cetree._Element article):
    """`bytes(_body_xslt()(article))`."""
    cdef Out out
    cdef xmlNode* c
    cdef Kind k
    out.size, out.cap = 0, 1 << 16
    out.data = <char*>malloc(out.cap)
    if out.data == NULL:
        raise MemoryError()
    try:
        c = article._c_node.children
        while c != NULL:
            if c.type == ELEMENT and kind(c) == BODY:
                element(&out, c, False)
            c = c.next
        c = article._c_node.children
        while c != NULL:
            if c.type == ELEMENT:
                k = kind(c)
                if k == BACK or k == FLOATS_GROUP:
                    floats(&out, c)
            c = c.next
        return PyBytes_FromStringAndSize(out.data, out.size)
    finally:
        free(out.data)

# ------------------------------------------------------------------------------- count


cdef xmlNode* first_child(xmlNode* n, const char* name):
    cdef xmlNode* c = n.children
    while c != NULL:
        if c.type == ELEMENT and c.ns == NULL and _is(<const char*>c.name, name):
            return c
        c = c.next
    return NULL


cdef void count_below(xmlNode* n, long* counts, bint all_four):
    """Sections, paragraphs (with `all_four`), figures and tables below `n`."""
    cdef xmlNode* c = n.children
    cdef const char* s
    while c != NULL:
        if c.type == ELEMENT:
            if c.ns == NULL:
                s = <const char*>c.name
                if all_four and _is(s, b"sec"):
                    counts[0] += 1
                elif all_four and s[0] == b"p" and s[1] == 0:
                    counts[1] += 1
                elif _is(s, b"fig"):
                    counts[2] += 1
                elif _is(s, b"table-wrap"):
                    counts[3] += 1
            count_below(c, counts, all_four)
        c = c.next


def count(cetree._Element article):
    """`_count`: (sections, paragraphs, figures, tables)."""
    cdef long counts[4]
    counts[0] = counts[1] = counts[2] = counts[3] = 0
    cdef xmlNode* n = first_child(article._c_node, b"body")
    if n != NULL:
        count_below(n, counts, True)
    for name in (b"floats-group", b"back"):
        n = first_child(article._c_node, name)
        if n != NULL:
            count_below(n, counts, False)
    return counts[0], counts[1], counts[2], counts[3]

# ------------------------------------------------------------------------------- lines


cdef Py_ssize_t next_run(const char* s, Py_ssize_t pos, Py_ssize_t n):
    """The first newline, tab, CR or two spaces at or after `pos`, or `n`."""
    cdef Py_ssize_t first = n
    cdef const char* p = <const char*>memchr(s + pos, b"\n", first - pos)
    if p != NULL:
        first = p - s
    p = <const char*>memchr(s + pos, b"\t", first - pos)
    if p != NULL:
        first = p - s
    p = <const char*>memchr(s + pos, b"\r", first - pos)
    if p != NULL:
        first = p - s
    p = <const char*>memmem(s + pos, first - pos, b"  ", 2)
    if p != NULL:
        first = p - s
    return first


cdef inline bint ascii_space(unsigned char c):
    return c == 32 or c == 9 or c == 10 or c == 13 or c == 11 or c == 12


def lines(bytes text):
    """`_lines(text)`."""
    cdef const char* s = <const char*>text
    cdef const unsigned char* u = <const unsigned char*>text
    cdef Py_ssize_t n = len(text), start = 0, end, a, b, run = -1
    cdef const char* p
    out = []
    while True:
        p = <const char*>memmem(s + start, n - start, SEP, SEP_LEN)
        end = n if p == NULL else p - s
        a, b = start, end
        while a < b and ascii_space(u[a]):
            a += 1
        if a < b:  # not empty, not all (ASCII) whitespace: `piece.isspace()`
            if run < start:
                run = next_run(s, start, n)
            if run < end:
                line = " ".join(PyUnicode_DecodeUTF8(s + start, end - start, NULL).split())
            else:  # no newline, tab, CR or two spaces: at most one space at each end
                while b > a and u[b - 1] == 32:
                    b -= 1
                line = PyUnicode_DecodeUTF8(s + a, b - a, NULL)
                if u[a] >= 0x80 or u[a] < 0x20 or u[b - 1] >= 0x80 or u[b - 1] < 0x20:
                    line = line.strip()  # other whitespace (a no-break space, say) at an end
            if line:
                out.append(line)
        if end == n:
            return out
        start = end + SEP_LEN

# ------------------------------------------------------------------------------- cuttable


cdef inline bint starts(const char* s, Py_ssize_t n, Py_ssize_t pos, const char* prefix):
    cdef Py_ssize_t k = strlen(prefix)
    return pos + k <= n and memcmp(s + pos, prefix, k) == 0


def cuttable(bytes data, Py_ssize_t start, Py_ssize_t end):
    """`_cuttable(data, start, end)`: every `<` before the segment's last three bytes whose next
    bytes may begin a comment, CDATA, PI or a forbidden tag is looked at, in order."""
    cdef const char* s = <const char*>data
    cdef Py_ssize_t n = len(data), last = end - 3, pos = start, comment_end = start
    cdef const char* p
    cdef char c1, n1, n2
    cdef bint closing
    if not 0 <= start <= end <= n:  # never so from `_ref_list_span`: refused, not read past
        raise ValueError(f"segment {start}:{end} outside {n} bytes")
    while pos < last:
        p = <const char*>memchr(s + pos, b"<", last - pos)
        if p == NULL:
            return True
        pos = p - s
        c1 = s[pos + 1]
        closing = c1 == b"/"
        if closing:
            n1, n2 = s[pos + 2], s[pos + 3]
        else:
            n1, n2 = c1, s[pos + 2]
        if (c1 == b"!" or c1 == b"?" or (n1 == b"f" and n2 == b"i") or (n1 == b"t" and n2 == b"a")
                or (closing and n1 == b"b" and n2 == b"a")):
            if pos >= comment_end and starts(s, n, pos, b"<!--"):
                p = <const char*>memmem(s + pos + 4, max(end - pos - 4, 0), b"-->", 3)
                if p == NULL:
                    return False
                comment_end = p - s + 3
            elif (starts(s, n, pos, b"<!") or starts(s, n, pos, b"<?")
                  or starts(s, n, pos, b"<fig") or starts(s, n, pos, b"</fig")
                  or starts(s, n, pos, b"<table-wrap") or starts(s, n, pos, b"</table-wrap")
                  or starts(s, n, pos, b"</back")):
                return False
        pos += 1
    return True
