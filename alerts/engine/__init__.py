"""Alert engine: evaluate rules for touched series and sweep timers, writing alerts and events.

The alert loop (alerts/loop.py) calls `evaluate` after each batch of dirty series and `sweep`
periodically, both inside its transaction. The engine keeps no state in memory: every alert,
pending timer and episode boundary is in the database, so a restarted worker neither re-fires
nor forgets. Each (rule, subject) is evaluated under a transaction-scoped advisory lock, so
several workers can share the work.

The rooms: `rounds` (the two entry points and the order of their steps), `catalogue` (the
process's catalogue snapshot, handed in by the loop, with the rules in force), `plan` (which
rules × subjects a batch wakes), `kinds` (one object per rule kind: what it watches and needs,
and its pure point builders), `fetch` (reading what the kinds need), `decide` (what points do
to alerts), `persist` (alert and event rows), `timers` (pending timers and staleness) and
`propagation` (pre-alerts downstream), `episodes` (the regional episodes their alerts announce).
"""

from alerts.engine.plan import Touched
from alerts.engine.rounds import evaluate, sweep

__all__ = ["Touched", "evaluate", "sweep"]
