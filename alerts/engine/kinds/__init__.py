"""One object per kind of rule (schemas/rules.py `RuleKind`), pure: no database in here.

Series kinds (threshold, rate of change, AQI, water class, regional episode) are woken by the
data of the series they watch and share the `SeriesKind` protocol (kinds/base.py); staleness is
judged by the sweep, propagation follows the tracks other rules write. A new series kind is one
module here and one entry in SERIES_KINDS.
"""

from alerts.engine.kinds.aqi import Aqi
from alerts.engine.kinds.base import Data, Need, SeriesKind
from alerts.engine.kinds.episode import RegionalEpisode
from alerts.engine.kinds.propagation import PreAlert, Propagation
from alerts.engine.kinds.rate import Rate
from alerts.engine.kinds.staleness import Staleness
from alerts.engine.kinds.threshold import Threshold
from alerts.engine.kinds.water import WaterClass

SERIES_KINDS: dict[str, SeriesKind] = {
    kind.kind: kind for kind in (Threshold(), Rate(), Aqi(), WaterClass(), RegionalEpisode())
}
STALENESS = Staleness()
PROPAGATION = Propagation()

__all__ = [
    "PROPAGATION",
    "SERIES_KINDS",
    "STALENESS",
    "Data",
    "Need",
    "PreAlert",
    "SeriesKind",
]
