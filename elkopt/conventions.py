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

plans (read by the published schedulers, scheduler=elk_*; elkopt's schedulers always plan
on elkopt's plan tables)
    published_plans     operators' plans and costs come from the published enumeration and
                        cold-hot tables (`elkopt.elk.tables`): HBM bytes are the smallest cold
                        size x cores (per-core padding included), the published temporal
                        sort, reduce ladder, Slice compute and inter-chip factor, and loads
                        delivered at the published 5 GB/s per core (5.5 in Elk-Full and
                        Ideal). Off, the published schedulers read elkopt's plan tables, the
                        operators' unique HBM bytes and the chip's link rate. Needs
                        drop_scalar_operands (the published tables have no scalar operands)
    capacity_split      operators above the published capacity (cores // split_factor MiB of
                        2-byte elements) are halved along their largest dim until they fit,
                        as the published parser does (`elkopt.elk.program`; needs
                        published_plans; without it planning.split_fraction cuts)


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
    "published_plans": "plans and costs from the published enumeration and cold-hot tables (padded HBM "
                       "bytes, published delivery rates)",
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
    published_plans: bool = False
    capacity_split: bool = False

    def __post_init__(self) -> None:
        if self.capacity_split and not self.published_plans:
            raise ValueError("conventions.capacity_split cuts the published plan tables' operators: set "
                             "conventions.published_plans=true too, or capacity_split=false (elkopt's own "
                             "cut is planning.split_fraction)")
        if self.published_plans and not self.drop_scalar_operands:
            raise ValueError("conventions.published_plans: the published plan tables have no scalar operands; "
                             "set conventions.drop_scalar_operands=true too, or published_plans=false")

    @classmethod
    def published(cls) -> Conventions:
        """Every rule of the published accounting on."""
        return cls("published", **{rule: True for rule in RULES})

    def only(self, rule: str) -> Conventions:
        """elkopt's accounting with one published rule on (to see what it is worth), and
        the rules it needs: published_plans needs drop_scalar_operands, capacity_split
        both."""
        if rule not in RULES:
            raise ValueError(f"unknown convention {rule!r}; the rules are {', '.join(RULES)}")
        needs = {"published_plans": {"drop_scalar_operands": True},
                 "capacity_split": {"drop_scalar_operands": True, "published_plans": True}}.get(rule, {})
        return replace(Conventions(), name=f"elkopt+{rule}", **needs, **{rule: True})

    @property
    def active(self) -> tuple[str, ...]:
        """The rules that are on, in documented order."""
        return tuple(rule for rule in RULES if getattr(self, rule))


assert set(RULES) == {f.name for f in fields(Conventions)} - {"name"}, "every rule is documented"
