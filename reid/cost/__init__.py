"""What a run costs and where it ran: the meter that times every record of metrics.json
(:mod:`reid.cost.meter`) and the tables ``reid.report`` prints from those records (:mod:`reid.cost.tables`)."""
