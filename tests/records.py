"""What two runs of the same command must agree on in their metrics.json."""
import pytest


def results(metrics: dict) -> dict:
    """Every entry but the run headers and the partial cost of an interrupted record, each without its cost (in
    the entries of lists too): seconds and memory differ from run to run, the results must not."""
    def without_cost(value):
        if isinstance(value, dict):
            return {name: without_cost(item) for name, item in value.items() if name != "cost"}
        if isinstance(value, list):
            return [without_cost(item) for item in value]
        return value

    return {key: without_cost(entry) for key, entry in metrics.items() if key not in ("run", "cost_partial")}


def flat(entry: dict | list, prefix: str = "") -> dict:
    """An entry's values by dotted key (``cluster_sizes_global.median``, ``grouping_warnings.0``), nested dicts
    and lists flattened, so that ``pytest.approx`` compares them."""
    values = {}
    for name, value in (entry.items() if isinstance(entry, dict) else enumerate(entry)):
        if isinstance(value, (dict, list)):
            values.update(flat(value, f"{prefix}{name}."))
        else:
            values[f"{prefix}{name}"] = value
    return values


def assert_same_entry(actual: dict, expected: dict, **tolerance) -> None:
    """The same keys, the numbers within ``tolerance`` (``pytest.approx``'s), everything else equal."""
    actual, expected = flat(actual), flat(expected)
    assert actual.keys() == expected.keys()
    numbers = {key for key, value in expected.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    assert {key: actual[key] for key in numbers} == pytest.approx({key: expected[key] for key in numbers}, **tolerance)
    others = expected.keys() - numbers
    assert {key: actual[key] for key in others} == {key: expected[key] for key in others}
