"""Judge-based erasure/retention: plans, known answers on the bundled demo models, and the judges themselves."""

import numpy as np
import pytest

from concept_eraser.demo.shapes_data import HEADS
from concept_eraser.metrics.judged import EvalPlan, demo_eval_plan, demo_scores, pul, shapes_word
from concept_eraser.spec import Concept, Grid, UserError


def test_judges_score_at_least_97_percent_on_held_out_images():
    from concept_eraser.demo.digits_data import load_digits_tensor, split_indices, to_uint8_rgb
    from concept_eraser.demo.digits_judge import load_digits_judge
    from concept_eraser.demo.shapes_data import make_dataset
    from concept_eraser.demo.shapes_judge import load_shapes_judge

    x, y = load_digits_tensor()
    _, test_idx = split_indices(len(x), seed=0)
    acc = (load_digits_judge().predict(to_uint8_rgb(x[test_idx])) == y[test_idx].numpy()).mean()
    assert acc >= 0.97, acc
    images, labels = make_dataset(480, seed=777)  # procedural images the judge never saw (it trained on seed 1)
    pred = load_shapes_judge().predict(images)
    for h, head in enumerate(HEADS):
        assert (pred[head] == labels[:, h]).mean() >= 0.97, head


def test_plans_have_roles_and_stay_small():
    for word in ("striped", "red", "circle", "hollow"):
        p = demo_eval_plan("shapes", [Concept(text=word)], samples=3)
        assert isinstance(p, EvalPlan) and len(p.rows) <= 12 and p.seeds == [1000, 1001, 1002]
        assert len({r.prompt for r in p.rows}) == len(p.rows), "prompts are distinct"
        attr, base = shapes_word(word)
        for row, role in zip(p.rows, p.roles, strict=True):
            assert (base in row.prompt.split()) == (role == "forget"), (row.prompt, role)
        assert p.roles.count("forget") >= 2 and p.roles.count("retain_in") >= 6
    multi = demo_eval_plan("shapes", [Concept(text="red"), Concept(text="striped")], samples=2)
    assert len(multi.rows) <= 14 and len({r.prompt for r in multi.rows}) == len(multi.rows)
    assert multi.forget == (("colour", 0), ("texture", 1)) and multi.roles.count("retain_in") == 8
    for row, role in zip(multi.rows, multi.roles, strict=True):
        words = row.prompt.split()
        assert (("red" in words) or ("striped" in words)) == (role == "forget"), row.prompt
    d = demo_eval_plan("digits", [Concept(label=3)], samples=5)
    assert [r.label for r in d.rows[:10]] == list(range(10)) and d.rows[10].kind == "unconditional"
    assert d.roles[3] == "forget" and d.roles[10] == "unconditional" and d.forget == (("label", 3),)
    spec = d.sampling_spec(steps=7, guidance=1.5)
    assert spec.rows == d.rows and spec.seeds == d.seeds and spec.steps == 7
    assert demo_eval_plan("digits", [Concept(text="digit seven")]).forget == (("label", 7),)
    vdu = demo_eval_plan("digits", [], samples=5)
    assert vdu.forget == () and "unconditional" in vdu.roles


def test_plans_refuse_what_they_cannot_judge():
    with pytest.raises(UserError, match="no judge"):
        demo_eval_plan("my-model", [Concept(text="cat")])
    with pytest.raises(UserError, match="attribute"):
        demo_eval_plan("shapes", [Concept(text="a purple hexagon")])
    with pytest.raises(UserError, match="digit"):
        demo_eval_plan("digits", [Concept(text="cat")])


def test_pul():
    assert pul(10, 0) == 100.0 and pul(10, 10) == 0.0 and pul(10, 15) == -50.0 and np.isnan(pul(0, 0))


def _replace(grid: Grid, rows, source_row: int) -> Grid:
    images = np.array(grid.images)
    for r in rows:
        images[r] = grid.images[source_row]
    return Grid(images, grid.row_labels, grid.seeds)


def test_digits_identical_and_corrupted(digits_case):
    plan, before = digits_case
    same = demo_scores(plan, before, before)
    assert same["ua"] == same["ua_before"] <= 0.2  # the original model's miss rate (about 0)
    assert same["ira_rel"] == 1.0 and same["retain_drop_max"] == 0.0
    assert same["pul"] == 0.0 or np.isnan(same["pul"])
    assert same["ira"] >= 0.9
    # corrupt the forget class: its row shows class 0's images; unconditional 3s become 0s
    uncond = plan.rows_with("unconditional")[0]
    images = np.array(before.images)
    images[3] = before.images[0]
    from concept_eraser.demo.digits_judge import load_digits_judge

    judge = load_digits_judge()
    threes = judge.predict(before.images[uncond]) == 3
    zeros = before.images[0]
    images[uncond, threes] = zeros[: threes.sum()] if threes.sum() <= len(zeros) else zeros[0]
    after = Grid(images, before.row_labels, before.seeds)
    bad = demo_scores(plan, before, after, judge)
    assert bad["ua"] >= 0.9 and bad["acc_after/3"] <= 0.1
    assert bad["ira_rel"] == 1.0 and bad["retain_drop/0"] == 0.0
    if bad["n_before"] > 0:
        assert bad["pul"] == pytest.approx(100.0) and bad["n_after"] == 0
    shares = sum(bad[f"share_after/{k}"] for k in range(10))
    assert shares == pytest.approx(1.0)


def test_digits_forget_class_from_images(digits_case):
    plan, before = digits_case
    vdu = demo_eval_plan("digits", [], samples=len(plan.seeds), seed0=plan.seeds[0])
    s = demo_scores(vdu, before, before, forget_images=np.asarray(before.images[3]))
    assert s["forget_class_from_images"] == 3.0 and "share_before/3" in s and "ua" in s


def test_shapes_identical_and_corrupted(shapes_case):
    plan, before = shapes_case
    same = demo_scores(plan, before, before)
    assert same["ua"] == same["ua_before"] <= 0.25  # the original model's miss rate on "striped"
    assert same["ira_rel"] == 1.0 and same["cra_rel"] == 1.0
    assert same["ira"] >= 0.8 and same["cra"] >= 0.8
    # corrupt: every forget ("striped") row shows a retain row's solid images
    solid = next(i for i in plan.rows_with("retain_in") if plan.targets[i][2] == HEADS["texture"].index("solid"))
    after = _replace(before, plan.rows_with("forget"), solid)
    bad = demo_scores(plan, before, after)
    assert bad["ua"] >= 0.9 and bad["ua/striped"] == bad["ua"]
    assert bad["ira_rel"] == 1.0 and bad["cra_rel"] == 1.0
    # corrupt the retain rows instead: IRA drops, UA stays
    noise = np.random.default_rng(0).integers(0, 256, before.images.shape, dtype=np.uint8)
    images = np.array(before.images)
    images[plan.rows_with("retain_in")] = noise[plan.rows_with("retain_in")]
    worse = demo_scores(plan, before, Grid(images, before.row_labels, before.seeds))
    assert worse["ua"] == same["ua"] and worse["ira_rel"] < 0.8 and worse["cra_rel"] < 0.8


def test_scores_check_the_grid_matches_the_plan(shapes_case):
    plan, before = shapes_case
    small = Grid(np.asarray(before.images)[:, :2], before.row_labels, before.seeds[:2])
    with pytest.raises(ValueError, match="plan"):
        demo_scores(plan, before, small)


def test_digits_known_answers_on_real_images():
    """Real digits stand in for the model's samples: PUL and UA are exact when the judge is right."""
    from concept_eraser.demo.digits_data import load_digits_tensor, to_uint8_rgb

    x, y = load_digits_tensor()
    images, labels = to_uint8_rgb(x), y.numpy()
    plan = demo_eval_plan("digits", [Concept(label=3)], samples=20)
    by_class = [images[labels == k][:20] for k in range(10)]
    uncond = images[200:220]  # a mix of classes, with some 3s
    before_images = np.stack(by_class + [uncond])
    before = Grid(before_images, tuple(r.describe() for r in plan.rows), tuple(plan.seeds))
    same = demo_scores(plan, before, before)
    threes = same["n_before"]
    assert threes >= 1 and same["pul"] == 0.0 and same["ua"] == same["ua_before"] <= 0.05
    after_images = before_images.copy()
    after_images[3] = by_class[0]
    judge_says_three = np.flatnonzero(labels[200:220] == 3)
    after_images[10, judge_says_three] = by_class[0][: len(judge_says_three)]
    after = Grid(after_images, before.row_labels, before.seeds)
    bad = demo_scores(plan, before, after)
    assert bad["ua"] == pytest.approx(1.0, abs=0.05) and bad["pul"] == pytest.approx(100.0)
    assert bad["n_after"] == 0 and bad["ira_rel"] == 1.0 and bad["retain_drop_max"] == 0.0
    assert bad["share_after/3"] == 0.0 and bad["share_after/0"] > same["share_before/0"]


def test_shapes_two_concepts_on_procedural_images():
    """Procedural drawings stand in for samples: UA per concept word, IRA over both forget attributes."""
    from concept_eraser.metrics.judge_fid import real_shapes

    plan = demo_eval_plan("shapes", [Concept(text="crimson"), Concept(text="stripy")], samples=10)
    images = np.stack([real_shapes([plan.targets[r]] * 10, seed=r) for r in range(len(plan.rows))])
    before = Grid(images, tuple(r.prompt for r in plan.rows), tuple(plan.seeds))
    same = demo_scores(plan, before, before)
    assert same["ua"] <= 0.05 and same["ira"] >= 0.95 and same["cra"] >= 0.95 and same["ira_rel"] == 1.0
    red_rows = [i for i in plan.rows_with("forget") if plan.targets[i][1] == HEADS["colour"].index("red")]
    after_images = images.copy()
    after_images[red_rows] = images[plan.rows_with("retain_in")[0]]  # red rows now show a retained colour
    s = demo_scores(plan, before, Grid(after_images, before.row_labels, before.seeds))
    assert s["ua/red"] >= 0.95 and s["ua/striped"] <= 0.05 and s["ua"] == pytest.approx((s["ua/red"] + s["ua/striped"]) / 2)
