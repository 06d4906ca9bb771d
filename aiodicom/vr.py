"""Groups of Value Representations that the query builder and the local matcher treat alike."""

from __future__ import annotations

__all__ = [
    "BULK_VRS",
    "CHARSET_VRS",
    "EMPTY_VALUE",
    "FLOAT_VRS",
    "INT_VRS",
    "LEADING_SPACE_VRS",
    "NUMERIC_VRS",
    "TEMPORAL_VRS",
    "TEXT_VRS",
    "WILDCARD_VRS",
]

# PS3.4 C.2.2.2.4: the VRs where "*" and "?" are wildcards; in any other VR they are literal
# characters, which a query refuses and a matcher compares as they are.
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
# Values of these VRs are affected by Specific Character Set (PS3.5 6.1.2.3); the others must
# stay within the default repertoire whatever the character set.
CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "PN", "UT", "UC"})
TEXT_VRS = WILDCARD_VRS | {"AS"}
TEMPORAL_VRS = frozenset({"DA", "TM", "DT"})
INT_VRS = frozenset({"IS", "US", "UL", "SS", "SL", "UV", "SV"})
FLOAT_VRS = frozenset({"DS", "FL", "FD"})
NUMERIC_VRS = INT_VRS | FLOAT_VRS
BULK_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
# Leading spaces are significant in these VRs (PS3.5 Table 6.2-1), trailing ones never are.
LEADING_SPACE_VRS = frozenset({"LT", "ST", "UT", "UR"})
# Empty Value Matching (PS3.4 C.2.2.2.7) spells "match an empty value" as two quotation marks.
EMPTY_VALUE = '""'
