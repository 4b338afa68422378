"""The filter units' format version, shared by the rule units and the decontamination ones."""

# Bump when the filter's output changes: it re-keys every filter unit.
# 2: cut-off, PubMed/PMC overlap and decontamination. 3: keys are the unit specs.
# 4: the snapshot cut-off (revised_after) and the any-PMCID overlap rule; scans hold has_pmcid.
# 5: GPT-3's words (punctuation deleted, not a separator), the boilerplate guard, window mode.
# 6: the snapshot reaches PMC (published_after); scans count revised_after by publication year.
FILTER_VERSION = 6
# The splits a task is judged on (model selection and the reported numbers).
EVAL_SPLITS = ("dev", "test")
