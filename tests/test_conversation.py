"""The pure conversation functions as tables: apply, feedback, to_query, describe. No model, no index."""

import json

import pytest
from PIL import Image

from assistant.conversation import (
    MAX_EXAMPLES,
    MAX_HISTORY,
    QueryState,
    add_example,
    apply,
    describe,
    feedback,
    is_as_typed,
    key,
    to_dict,
    to_query,
    with_results,
)
from assistant.schema import Filters, QueryUpdate
from retrieval.query import Filter


def state(positive=(), **fields) -> QueryState:
    return QueryState(positive=tuple((p, 1.0) for p in positive), **fields)


def texts(s: QueryState) -> list[str]:
    return [t for t, _ in s.positive]


CATS = state(
    ["cats", "outdoors"],
    negative=("black cats",),
    liked=(5,),
    disliked=(7,),
    filters=Filter(date_from="2019", date_to="2019"),
    shown=(11, 12, 13),
)

APPLY = [
    # name, start, update, positive, negative, liked, disliked
    ("add to nothing", QueryState(), dict(add=["cats"]), ["cats"], [], [], []),
    ("refine", state(["cats"]), dict(add=["outdoors"]), ["cats", "outdoors"], [], [], []),
    ("same concept twice", state(["cats"]), dict(add=["The Cat"]), ["cats"], [], [], []),
    ("blank concepts dropped", state(["cats"]), dict(add=["  ", ""], exclude=[" "]), ["cats"], [], [], []),
    ("exclude", state(["cats"]), dict(exclude=["black cats"]), ["cats"], ["black cats"], [], []),
    (
        "exclude takes back a concept",
        state(["cats", "outdoors"]),
        dict(exclude=["outdoors"]),
        ["cats"],
        ["outdoors"],
        [],
        [],
    ),
    (
        "add takes back a negative",
        state(["cats"], negative=("dogs",)),
        dict(add=["dogs"]),
        ["cats", "dogs"],
        [],
        [],
        [],
    ),
    ("remove from both lists", CATS, dict(remove=["outdoors", "Black cats"]), ["cats"], [], [5], [7]),
    (
        "replace drops what belonged to the subject",
        CATS,
        dict(replace=True, add=["dogs"]),
        ["dogs"],
        [],
        [],
        [7],
    ),
    (
        "replace with nothing new changes nothing",
        CATS,
        dict(replace=True),
        ["cats", "outdoors"],
        ["black cats"],
        [5],
        [7],
    ),
    ("reset forgets everything", CATS, dict(reset=True), [], [], [], []),
    ("reset then a new request", CATS, dict(reset=True, add=["pyramids"]), ["pyramids"], [], [], []),
    ("more like #2", CATS, dict(more_like=[2]), ["cats", "outdoors"], ["black cats"], [5, 12], [7]),
    ("less like #1", CATS, dict(less_like=[1]), ["cats", "outdoors"], ["black cats"], [5], [7, 11]),
    (
        "less like a liked one",
        state(["cats"], liked=(12,), shown=(11, 12)),
        dict(less_like=[2]),
        ["cats"],
        [],
        [],
        [12],
    ),
    ("rank out of range", CATS, dict(more_like=[9]), ["cats", "outdoors"], ["black cats"], [5], [7]),
]


@pytest.mark.parametrize(
    "name,start,update,positive,negative,liked,disliked", APPLY, ids=[r[0] for r in APPLY]
)
def test_apply(name, start, update, positive, negative, liked, disliked):
    new = apply(start, QueryUpdate(**update))
    assert (texts(new), list(new.negative), list(new.liked), list(new.disliked)) == (
        positive,
        negative,
        liked,
        disliked,
    )


def test_apply_returns_a_new_state_and_leaves_the_input_alone():
    before = to_dict(CATS), CATS.history, CATS.notes
    new = apply(CATS, QueryUpdate(reset=True, add=["dogs"], exclude=["cats"], more_like=[1]))
    assert new is not CATS and (to_dict(CATS), CATS.history, CATS.notes) == before


def test_replace_keeps_filters_and_reset_keeps_only_what_is_on_screen():
    replaced = apply(CATS, QueryUpdate(replace=True, add=["dogs"]))
    assert replaced.filters == CATS.filters
    fresh = apply(CATS, QueryUpdate(reset=True))
    assert fresh.filters == Filter() and fresh.shown == CATS.shown and fresh.history == ()


def test_out_of_range_rank_leaves_a_note_for_the_answer():
    assert apply(CATS, QueryUpdate(more_like=[9])).notes == ("there is no #9: 3 results were shown",)
    assert apply(QueryState(), QueryUpdate(less_like=[2])).notes == (
        "there is no #2 yet: no results were shown",
    )
    assert apply(apply(CATS, QueryUpdate(more_like=[9])), QueryUpdate(add=["x"])).notes == ()
    assert apply(QueryState(shown=(4,)), QueryUpdate(more_like=[2])).notes == (
        "there is no #2: 1 result was shown",
    )


FILTERS = [
    (Filter(), Filters(date_from="2019", date_to="2019"), Filter(date_from="2019", date_to="2019")),
    (
        Filter(date_from="2019", date_to="2019"),
        Filters(folder="holidays"),
        Filter("2019", "2019", "holidays"),
    ),
    (
        Filter(date_from="2017", date_to="2019"),
        Filters(date_to="2018"),
        Filter(date_from="2017", date_to="2018"),
    ),
    (Filter(camera="Canon"), Filters(), Filter(camera="Canon")),
]


@pytest.mark.parametrize("current,update,expected", FILTERS)
def test_filters_merge(current, update, expected):
    assert apply(QueryState(filters=current), QueryUpdate(filters=update)).filters == expected


FEEDBACK = [
    # start liked, start disliked, id, up, liked, disliked
    ((), (), 3, True, (3,), ()),
    ((), (), 3, False, (), (3,)),
    ((3,), (), 3, False, (), (3,)),
    ((), (3,), 3, True, (3,), ()),
    ((1, 3), (), 1, True, (3, 1), ()),
]


@pytest.mark.parametrize("liked,disliked,image_id,up,new_liked,new_disliked", FEEDBACK)
def test_feedback(liked, disliked, image_id, up, new_liked, new_disliked):
    new = feedback(QueryState(liked=liked, disliked=disliked), image_id, up)
    assert (new.liked, new.disliked) == (new_liked, new_disliked)


def test_to_query_excludes_disliked_and_carries_everything_else():
    q = to_query(add_example(CATS, Image.new("RGB", (20, 20))), k=5)
    assert q.positive == [("cats", 1.0), ("outdoors", 1.0)]
    assert q.negative == [("black cats", 1.0)]
    assert (q.like_ids, q.dislike_ids, q.exclude_ids) == ([5], [7], [7])
    assert len(q.images) == 1 and q.filter == CATS.filters and q.k == 5
    assert to_query(QueryState()).is_empty() and not to_query(state(["cats"])).is_empty()


DESCRIBE = [
    (QueryState(), 0, "nothing yet; no results"),
    (state(["cats"]), 1, "cats; 1 result"),
    (
        state(["cats", "outdoors"], negative=("black cats",)),
        12,
        "cats, outdoors; leaving out: black cats; 12 results",
    ),
    (state(["cats"], liked=(12,), shown=(11, 12)), 12, "cats, like #2; 12 results"),
    (
        state(["cats"], liked=(12, 40, 41), shown=(11, 12)),
        3,
        "cats, like #2, like 2 photos you liked; 3 results",
    ),
    (state(["cats"], disliked=(4,)), 2, "cats; hiding 1 photo you turned down; 2 results"),
    (state(["cats"], filters=Filter(date_from="2019", date_to="2019")), 4, "cats, from 2019; 4 results"),
    (
        state(["cats"], filters=Filter(date_from="2017", date_to="2019")),
        4,
        "cats, from 2017 to 2019; 4 results",
    ),
    (
        state([], liked=(1,), filters=Filter(date_to="2018", folder="holidays")),
        4,
        "like 1 photo you liked, until 2018, in folder holidays; 4 results",
    ),
    (state(["猫"]), 5, "searched as typed: 猫 (offline search understands English best); 5 results"),
    (
        state(["cats", "室外"]),
        5,
        "cats; searched as typed: 室外 (offline search understands English best); 5 results",
    ),
    (
        state(["cats"], notes=("there is no #9: 3 results were shown",)),
        3,
        "cats; 3 results; there is no #9: 3 results were shown",
    ),
]


@pytest.mark.parametrize("s,n,expected", DESCRIBE)
def test_describe(s, n, expected):
    assert describe(s, n) == expected


def test_describe_mentions_uploaded_photos():
    one = add_example(state(["cats"]), Image.new("RGB", (30, 30), "red"))
    assert describe(one, 2) == "cats, like your photo; 2 results"
    assert describe(add_example(one, Image.new("RGB", (9, 9))), 2) == "cats, like your 2 photos; 2 results"


def test_uploaded_examples_are_kept_small_rgb_and_few():
    s = QueryState()
    for n in range(MAX_EXAMPLES + 2):
        s = add_example(s, Image.new("RGBA", (2000 + n, 1000)))
    assert len(s.images) == MAX_EXAMPLES
    assert all(i.mode == "RGB" and max(i.size) == 512 for i in s.images)
    assert s.images[-1].size == (512, 1000 * 512 // (2000 + MAX_EXAMPLES + 1))


def test_with_results_records_shown_ids_and_a_short_history():
    s = QueryState()
    for n in range(MAX_HISTORY + 3):
        s = with_results(s, [n, n + 1], f"turn {n}", f"summary {n}")
    assert s.shown == (MAX_HISTORY + 2, MAX_HISTORY + 3)
    assert len(s.history) == MAX_HISTORY and s.history[-1] == (
        f"turn {MAX_HISTORY + 2}",
        f"summary {MAX_HISTORY + 2}",
    )


def test_to_dict_is_json_with_images_counted():
    s = add_example(CATS, Image.new("RGB", (4, 4)))
    assert json.loads(json.dumps(to_dict(s))) == {
        "positive": [["cats", 1.0], ["outdoors", 1.0]],
        "negative": ["black cats"],
        "images": 1,
        "liked": [5],
        "disliked": [7],
        "filters": {"date_from": "2019", "date_to": "2019"},
        "shown": [11, 12, 13],
    }


@pytest.mark.parametrize(
    "a,b,same",
    [
        ("Cats", "the cat", True),
        ("black cats", "Black Cat!", True),
        ("glass", "glass", True),
        ("cats", "dogs", False),
    ],
)
def test_key(a, b, same):
    assert (key(a) == key(b)) is same


@pytest.mark.parametrize(
    "text,typed", [("cats", False), ("café crème", False), ("猫", True), ("кошки", True)]
)
def test_is_as_typed(text, typed):
    assert is_as_typed(text) is typed


def test_notes_of_a_turn_are_shown_with_what_was_searched_and_survive_a_reset():
    update = QueryUpdate(reset=True, add=["fish"], notes=["read “鱼” as “fish”"])
    after = apply(state(["cats"]), update)
    assert describe(after, 3) == "fish; 3 results; read “鱼” as “fish”"
    assert apply(after, QueryUpdate(add=["orange"])).notes == ()


def test_a_backwards_date_range_is_turned_round():
    after = apply(QueryState(), QueryUpdate(filters=Filters(date_from="2019", date_to="2017")))
    assert (after.filters.date_from, after.filters.date_to) == ("2017", "2019")
