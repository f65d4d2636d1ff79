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

plans (read by the published designs, scheduler=elk_*, and by elkopt's search in the
published model, scheduler=elkopt; elkopt's other schedulers always plan on elkopt's plan
tables and time on elkopt's timeline)
    published_plans     the operators' plans and costs come from the published enumeration
                        and cold-hot tables (`elkopt.elk.tables`) and schedules are timed by
                        the published model. Off, the published designs choose from
                        elkopt's plan tables and their decisions are timed on elkopt's
                        timeline. Needs drop_scalar_operands (the published tables have no
                        scalar operands)
    temporal_sort       the published temporal enumeration's dimension sort (section 7,
                        quirk 1); off, each dim its own candidate list. Needs published_plans
    inter_chip_always   the inter-chip exchange factor (x1.25) on every plan of a machine of
                        several chips; off, only on plans that span chips. Needs
                        published_plans
    slice_compute       a Slice costs the shift of its output plus a sync; off, nothing.
                        Needs published_plans
    reduce_ladder       reduced partial sums are aligned by the published ladder (outputs of
                        2 or less unrounded); off, by elkopt's. Needs published_plans
    capacity_split      operators above the published capacity (cores // split_factor MiB of
                        2-byte elements) are halved along their largest dim until they fit,
                        as the published parser does (`elkopt.elk.program`). Needs
                        published_plans (without it planning.split_fraction cuts)

loads (the published designs' load model, on either plan tables)
    padded_hbm_bytes    a load streams the operator's smallest cold size x cores (per-core
                        padding included); off, its unique HBM bytes
    published_delivery  loads are delivered at the published 5 GB/s per core (5.5 in
                        Elk-Full and Ideal); off, at the chip's per-core link rate
    noc_thresholds      a load takes at most its design's published share of the NoC
                        (Basic and Static 0.7, Elk-Dyn 0.9, 0.7 and 0.5, the best kept,
                        Elk-Full and elkopt's search 0.99) and is stretched when its cold
                        layout needs more; off, a load may take the whole NoC (share 1,
                        Elk-Dyn runs once). Ideal has no share either way

`Conventions()` is elkopt's accounting (every rule off); `Conventions.published()` turns
every rule on. Library code takes a `Conventions`; the command line sets it with
`conventions=elkopt|published|published_graphs` and one field at a time
(`conventions.slice_input_shape=false`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from elkopt.elk.enumerate import PlanRules

#: The rules in the order they are documented, with one line each (experiments/README.md).
RULES = {
    "reload_activations": "an input that is neither the previous operator's output nor one of its "
                          "inputs is read from HBM again",
    "slice_input_shape": "a Slice is costed over the shape of the tensor it slices",
    "drop_scalar_operands": "broadcast scalars are not operands",
    "published_plans": "plans and costs from the published enumeration and cold-hot tables, timed by the "
                       "published model",
    "temporal_sort": "the published temporal enumeration's dimension sort",
    "inter_chip_always": "the inter-chip factor on every plan of a multi-chip machine",
    "slice_compute": "a Slice costs the shift of its output plus a sync",
    "reduce_ladder": "reduced partial sums aligned by the published ladder",
    "capacity_split": "operators above cores // split_factor MiB are halved along their largest dim "
                      "until they fit",
    "padded_hbm_bytes": "a load streams the smallest cold size x cores",
    "published_delivery": "loads delivered at the published 5 (5.5) GB/s per core",
    "noc_thresholds": "a load takes at most its design's published share of the NoC",
}
#: What a rule needs on (it is meaningless without them).
NEEDS = {
    "published_plans": ("drop_scalar_operands",),
    **{rule: ("drop_scalar_operands", "published_plans")
       for rule in ("temporal_sort", "inter_chip_always", "slice_compute", "reduce_ladder", "capacity_split")},
}


@dataclass(frozen=True)
class Conventions:
    """Which published accounting rules apply (module doc); all off is elkopt's own."""

    name: str = "elkopt"
    reload_activations: bool = False
    slice_input_shape: bool = False
    drop_scalar_operands: bool = False
    published_plans: bool = False
    temporal_sort: bool = False
    inter_chip_always: bool = False
    slice_compute: bool = False
    reduce_ladder: bool = False
    capacity_split: bool = False
    padded_hbm_bytes: bool = False
    published_delivery: bool = False
    noc_thresholds: bool = False

    def __post_init__(self) -> None:
        for rule, needs in NEEDS.items():
            missing = [n for n in needs if getattr(self, rule) and not getattr(self, n)]
            if missing:
                raise ValueError(f"conventions.{rule} needs {' and '.join(f'conventions.{n}' for n in missing)}: "
                                 f"set {' and '.join(f'{n}=true' for n in missing)} too, or {rule}=false")

    @classmethod
    def published(cls) -> Conventions:
        """Every rule of the published accounting on."""
        return cls("published", **{rule: True for rule in RULES})

    def only(self, rule: str) -> Conventions:
        """elkopt's accounting with one published rule on (to see what it is worth), and
        the rules it needs (`NEEDS`)."""
        if rule not in RULES:
            raise ValueError(f"unknown convention {rule!r}; the rules are {', '.join(RULES)}")
        on = {n: True for n in NEEDS.get(rule, ())}
        return replace(Conventions(), name=f"elkopt+{rule}", **on, **{rule: True})

    def without(self, rule: str) -> Conventions:
        """These conventions with `rule` off, and the rules that need it."""
        if rule not in RULES:
            raise ValueError(f"unknown convention {rule!r}; the rules are {', '.join(RULES)}")
        off = {r: False for r, needs in NEEDS.items() if rule in needs}
        return replace(self, name=f"{self.name}-{rule}", **off, **{rule: False})

    @property
    def active(self) -> tuple[str, ...]:
        """The rules that are on, in documented order."""
        return tuple(rule for rule in RULES if getattr(self, rule))

    def plan_rules(self) -> PlanRules:
        """The published plan search's quirks these conventions keep."""
        return PlanRules(self.temporal_sort, self.inter_chip_always, self.slice_compute, self.reduce_ladder)


assert set(RULES) == {f.name for f in fields(Conventions)} - {"name"}, "every rule is documented"
