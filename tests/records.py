"""What two runs of the same command must agree on in their metrics.json."""


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
