"""Accounting conventions: elkopt's own, or the published Elk compiler's, rule by rule.

The published numbers were computed under accounting rules that differ from elkopt's in
many small ways (ELK_REFERENCE sections 2-3). Comparing on equal terms means applying
them, and seeing what each one is worth means applying them one at a time. So every
difference is one named field of `Conventions`, read by the layer it belongs to:

graph (the importer and graph transforms)
    reload_activations  an operator's input that is neither the previous operator's output
                        nor one of its inputs is read from HBM again (the published parser
                        keeps only those on chip: the residual stream is reloaded)
    slice_input_shape   a Slice is costed over the shape of the tensor it slices, as the
                        published parser sizes it
    drop_scalar_operands  broadcast scalars are not operands (the published parser deletes
                        them; elkopt keeps them as 1-element on-chip operands)
    capacity_split      operators above the published capacity (cores // split_factor MiB of
                        2-byte elements) are halved along their largest dim until they fit,
                        as the published parser does (read by the published schedulers,
                        `elkopt.elk.program`; elkopt's own cut is planning.split_fraction)

plans and timeline (to come with the published plan tables, `elkopt.elk`)

`Conventions()` is elkopt's accounting (every rule off); `Conventions.published()` turns
every rule on. Library code takes a `Conventions`; the command line sets it with
`conventions=elkopt|published` and one field at a time (`conventions.slice_input_shape=false`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

#: The rules in the order they are documented, with one line each (experiments/README.md).
RULES = {
    "reload_activations": "an input that is neither the previous operator's output nor one of its "
                          "inputs is read from HBM again",
    "slice_input_shape": "a Slice is costed over the shape of the tensor it slices",
    "drop_scalar_operands": "broadcast scalars are not operands",
    "capacity_split": "operators above cores // split_factor MiB are halved along their largest dim "
                      "until they fit",
}


@dataclass(frozen=True)
class Conventions:
    """Which published accounting rules apply (module doc); all off is elkopt's own."""

    name: str = "elkopt"
    reload_activations: bool = False
    slice_input_shape: bool = False
    drop_scalar_operands: bool = False
    capacity_split: bool = False

    @classmethod
    def published(cls) -> Conventions:
        """Every rule of the published accounting on."""
        return cls("published", **{rule: True for rule in RULES})

    def only(self, rule: str) -> Conventions:
        """elkopt's accounting with one published rule on (to see what it is worth)."""
        if rule not in RULES:
            raise ValueError(f"unknown convention {rule!r}; the rules are {', '.join(RULES)}")
        return replace(Conventions(), name=f"elkopt+{rule}", **{rule: True})

    @property
    def active(self) -> tuple[str, ...]:
        """The rules that are on, in documented order."""
        return tuple(rule for rule in RULES if getattr(self, rule))


assert set(RULES) == {f.name for f in fields(Conventions)} - {"name"}, "every rule is documented"
