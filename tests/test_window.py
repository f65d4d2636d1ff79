"""The window allocation MILP against brute-force enumeration."""

import numpy as np
import pytest

from elkopt.schedule.window import Group, WindowInfeasible, brute_force_window, solve_window
from elkopt.solve import SolverOptions

EXACT = SolverOptions(mip_rel_gap=0.0)


def random_window(rng, n_groups, max_items):
    groups = []
    for g in range(n_groups):
        k = int(rng.integers(1, max_items + 1))
        weight = rng.integers(0, 400, size=k).astype(float)
        # heavier choices tend to be faster, as plans do, with noise
        cost = 1000.0 - weight + rng.integers(0, 300, size=k)
        groups.append(Group(f"op{g}", weight, cost))
    return groups


@pytest.mark.parametrize("seed", range(12))
def test_same_optimum_as_brute_force(seed):
    rng = np.random.default_rng(seed)
    groups = random_window(rng, n_groups=int(rng.integers(1, 5)), max_items=6)
    lightest = sum(g.weight.min() for g in groups)
    heaviest = sum(g.weight.max() for g in groups)
    capacity = float(rng.uniform(lightest, heaviest))
    reference = brute_force_window(groups, capacity)
    solution = solve_window(groups, capacity, EXACT)
    assert reference is not None
    assert solution.cost == pytest.approx(reference[0], rel=1e-9)
    assert solution.weight <= capacity
    # the picks are what the cost says they are
    assert solution.cost == pytest.approx(sum(g.cost[k] for g, k in zip(groups, solution.picks)))


def test_capacity_forces_a_slower_choice():
    fast_but_big = Group("exec", np.array([100.0, 300.0]), np.array([50.0, 10.0]))
    layout = Group("preload", np.array([50.0, 150.0]), np.array([20.0, 0.0]))
    # 300 + 50 = 350 fits: the fast plan with the small layout
    assert solve_window([fast_but_big, layout], 350, EXACT).picks == (1, 0)
    # 250 leaves only the slow plan; then the broadcast layout is affordable
    assert solve_window([fast_but_big, layout], 250, EXACT).picks == (0, 1)


def test_nothing_fits_names_the_window():
    groups = [Group("qkv", np.array([500.0]), np.array([1.0])), Group("down", np.array([200.0]), np.array([1.0]))]
    with pytest.raises(WindowInfeasible, match="qkv\\+down.*700.*600"):
        solve_window(groups, 600)
    assert brute_force_window(groups, 600) is None


def test_group_must_offer_a_choice():
    with pytest.raises(ValueError, match="'empty' has no choice"):
        Group("empty", np.array([]), np.array([]))
