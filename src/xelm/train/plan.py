"""Hierarchical Multi-Round (HMR) training, planned from the typology tree.

Flat x-BTM branches every expert from the seed. HMR trains the tree top-down: round r has
one expert per cluster of the tree cut at ``k_r = rounds[r]`` clusters, and each of them
branches from the round-(r-1) expert whose cluster contains its languages (round 1's
parent is the seed). The tree is one merge history, so the cuts nest and every cluster
has exactly one parent cluster in the round before.

Round r gets ``fraction_r * train.tokens`` tokens, split equally over its ``k_r`` experts
and rounded down to whole optimizer steps; the dense baseline gets the exact sum over all
rounds, so the comparison stays at equal training tokens.

Naming: the final round keeps the flat names of ``allocation.json`` (``e0``, ``e1``, ...,
so routing, evaluation and ``xelm.json`` read as in a flat run); earlier rounds are
``r1-e0``, ``r1-e1``, ..., each in ``experts/<name>/``. A plan is pure data: printing it,
or ``xelm status``, needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from xelm.allocate.allocation import expert_names
from xelm.allocate.typology import TypologyTree

SEED = "seed"


class PlanError(ValueError):
    """The HMR schedule cannot be planned on this tree or budget; the message says why."""


@dataclass(frozen=True)
class PlannedExpert:
    """One training job of the plan: ``name`` trains on ``languages`` from ``parent``."""

    name: str
    languages: tuple[str, ...]
    parent: str          # "seed" or the name of an earlier-round expert
    round: int           # 1-based
    tokens: int
    seed_offset: int     # added to the run's random seed (the dense baseline uses 1)

    @property
    def path(self) -> str:
        """The expert's folder, relative to the run directory."""
        return f"experts/{self.name}"


@dataclass(frozen=True)
class HMRPlan:
    rounds: tuple[tuple[PlannedExpert, ...], ...]

    @property
    def final(self) -> tuple[PlannedExpert, ...]:
        return self.rounds[-1]

    @property
    def experts(self) -> list[PlannedExpert]:
        """Every job, round by round."""
        return [e for experts in self.rounds for e in experts]

    @property
    def dense_tokens(self) -> int:
        """The dense baseline's budget: exactly the tokens of all rounds together."""
        return sum(e.tokens for e in self.experts)

    def round_tokens(self) -> dict[int, int]:
        """Tokens of each round over all its experts."""
        return {i + 1: sum(e.tokens for e in experts) for i, experts in enumerate(self.rounds)}

    def ancestors(self, name: str) -> list[PlannedExpert]:
        """The earlier-round experts ``name`` descends from, root first (seed excluded)."""
        by_name = {e.name: e for e in self.experts}
        chain, parent = [], by_name[name].parent
        while parent != SEED:
            chain.append(by_name[parent])
            parent = by_name[parent].parent
        return chain[::-1]


def per_expert_tokens(total: int, fraction: float, k: int, tokens_per_step: int,
                      round_: int) -> int:
    """``fraction * total / k`` rounded down to whole optimizer steps (at least one)."""
    steps = int(total * fraction) // k // tokens_per_step
    if steps < 1:
        raise PlanError(f"HMR round {round_}: {fraction:g} of train.tokens={total:,} split over "
                        f"{k} experts is less than one batch ({tokens_per_step:,} tokens); "
                        "raise train.tokens or that round's hmr.budget_fractions")
    return steps * tokens_per_step


def plan_hmr(tree: TypologyTree, rounds: list[int], fractions: list[float], total_tokens: int,
             tokens_per_step: int, final_names: dict[frozenset, str] | None = None) -> HMRPlan:
    """The HMR jobs: round r trains one expert per cluster of ``tree`` cut at ``rounds[r]``.

    ``final_names`` maps a final cluster's language set to its expert name (the flat names
    of ``allocation.json``); by default ``e0, e1, ...`` in cluster order.
    """
    if len(rounds) != len(fractions):
        raise PlanError(f"{len(rounds)} rounds but {len(fractions)} budget fractions")
    if rounds[-1] > tree.n_languages:
        raise PlanError(f"hmr.rounds={rounds}: the tree has only {tree.n_languages} languages, "
                        f"so no round can have more than {tree.n_languages} experts")
    planned: list[tuple[PlannedExpert, ...]] = []
    previous: dict[int, str] = {}  # cluster node id of the previous round -> its expert
    for r, (k, fraction) in enumerate(zip(rounds, fractions), start=1):
        nodes = tree.clusters(k)
        last = r == len(rounds)
        names = _names(tree, nodes, final_names) if last else [f"r{r}-{n}" for n in expert_names(k)]
        tokens = per_expert_tokens(total_tokens, fraction, k, tokens_per_step, r)
        experts = []
        for i, (node, name) in enumerate(zip(nodes, names)):
            parent = previous[_ancestor_in(tree, node, previous)] if previous else SEED
            offset = 2 + i if last else 100 * r + i
            experts.append(PlannedExpert(name, tuple(tree.leaves(node)), parent, r, tokens, offset))
        planned.append(tuple(experts))
        previous = dict(zip(nodes, names))
    return HMRPlan(tuple(planned))


def _ancestor_in(tree: TypologyTree, node: int, candidates: dict[int, str]) -> int:
    """The node among ``candidates`` that is ``node`` or lies above it in the tree."""
    current: int | None = node
    while current is not None and current not in candidates:
        current = tree.parent(current)
    if current is None:  # cannot happen for cuts of one merge tree
        raise PlanError(f"tree node {node} lies under no cluster of the previous round")
    return current


def _names(tree: TypologyTree, nodes: list[int], final_names: dict[frozenset, str] | None):
    if final_names is None:
        return expert_names(len(nodes))
    names = []
    for node in nodes:
        key = frozenset(tree.leaves(node))
        if key not in final_names:
            raise PlanError(f"the final HMR cluster {sorted(key)} is not an expert of "
                            "allocation.json; was the allocation made with another tree or k?")
        names.append(final_names[key])
    return names


def plan_for_run(alloc: dict, rounds: list[int], fractions: list[float], total_tokens: int,
                 tokens_per_step: int) -> HMRPlan:
    """The plan of a run from its ``allocation.json`` (its tree and its expert names)."""
    if not alloc.get("tree"):
        raise PlanError("HMR needs the typology tree in allocation.json (allocate.method="
                        f"typology); this allocation was made with {alloc.get('method')!r}")
    final_names = {frozenset(spec["languages"]): name for name, spec in alloc["experts"].items()}
    return plan_hmr(TypologyTree.from_dict(alloc["tree"]), rounds, fractions, total_tokens,
                    tokens_per_step, final_names)


def format_plan(plan: HMRPlan) -> str:
    """One line per job: round, name, parent, tokens, languages."""
    lines = [f"{'round':<6}{'expert':<10}{'parent':<10}{'tokens':>12}  languages"]
    for e in plan.experts:
        lines.append(f"{e.round:<6}{e.name:<10}{e.parent:<10}{e.tokens:>12,}  "
                     + " ".join(e.languages))
    lines.append(f"dense baseline: {plan.dense_tokens:,} tokens (all rounds together)")
    return "\n".join(lines)


# --------------------------------------------------------------- proportional budgets
def group_shares(alloc: dict, language_weight: dict[str, float]) -> dict[str, float]:
    """Each expert's share of the dense baseline's training (``train.expert_budget:
    proportional``), from ``allocation.json``.

    A language expert's share is the dense sampling probability of its languages
    (``language_weight``, XGLM's ``(token share)^alpha``; at alpha=1 their share of the
    training tokens), so each language gets as many tokens from its expert as from dense.
    A TF-IDF cluster's share is its share of the training tokens.
    """
    experts = alloc["experts"]
    if alloc.get("method") == "tfidf":
        missing = [n for n, spec in experts.items() if "tokens" not in spec]
        if missing:
            raise PlanError(f"allocation.json gives no token count for TF-IDF experts {missing}; "
                            "allocate again to use train.expert_budget=proportional")
        total = sum(spec["tokens"] for spec in experts.values())
        return {n: spec["tokens"] / total for n, spec in experts.items()}
    unknown = sorted({lang for spec in experts.values() for lang in spec["languages"]}
                     - set(language_weight))
    if unknown:
        raise PlanError(f"experts list languages {unknown} that have no training data")
    return {n: sum(language_weight[lang] for lang in spec["languages"])
            for n, spec in experts.items()}


def proportional_tokens(shares: dict[str, float], total_steps: int,
                        tokens_per_step: int) -> dict[str, int]:
    """``total_steps`` optimizer steps split in proportion to ``shares`` (largest
    remainder: the steps add up exactly, each expert within one step of its share)."""
    names, weights = list(shares), [max(float(shares[n]), 0.0) for n in shares]
    norm = sum(weights)
    if norm <= 0:
        raise PlanError("every expert has a share of 0; nothing to split the budget by")
    exact = [total_steps * w / norm for w in weights]
    steps = [int(x) for x in exact]
    by_remainder = sorted(range(len(names)), key=lambda i: (steps[i] - exact[i], i))
    for i in by_remainder[: total_steps - sum(steps)]:
        steps[i] += 1
    starved = [f"{n} ({w / norm:.2%})" for n, w, s in zip(names, weights, steps) if s < 1]
    if starved:
        raise PlanError(f"train.expert_budget=proportional leaves experts {', '.join(starved)} "
                        f"less than one batch of the {total_steps} steps; raise train.tokens "
                        "or use train.expert_budget=equal")
    return {n: s * tokens_per_step for n, s in zip(names, steps)}


def flat_plan(alloc: dict, per_expert: int, tokens_per_step: int,
              shares: dict[str, float] | None = None) -> HMRPlan:
    """Flat x-BTM: every expert of ``allocation.json`` branches from the seed with
    ``per_expert`` tokens, or, given ``shares``, the same total split by
    :func:`proportional_tokens`."""
    names = list(alloc["experts"])
    tokens = dict.fromkeys(names, per_expert)
    if shares is not None:
        tokens = proportional_tokens(shares, per_expert * len(names) // tokens_per_step,
                                     tokens_per_step)
    return HMRPlan((tuple(PlannedExpert(n, tuple(alloc["experts"][n]["languages"]), SEED, 1,
                                        tokens[n], 2 + i) for i, n in enumerate(names)),))
