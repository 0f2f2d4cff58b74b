"""What two runs of the same command must agree on in their metrics.json."""


def results(metrics: dict) -> dict:
    """Every entry but the run headers and the partial cost of an interrupted record, each without its cost:
    seconds and memory differ from run to run, the results must not."""
    return {key: {name: value for name, value in entry.items() if name != "cost"}
            for key, entry in metrics.items() if key not in ("run", "cost_partial")}
