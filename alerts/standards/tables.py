"""The standards' tables as literal data (docs/standards.md §2-§5); the logic lives beside them."""

from __future__ import annotations

from datetime import date

# HJ 633: an edition applies to observations from its first day (Asia/Shanghai).
AQI_EDITIONS: tuple[tuple[str, date], ...] = (
    ("2012", date.min),
    ("2026", date(2026, 3, 1)),
)

# IAQI value of each breakpoint row; a column's tuple covers as many rows as it has values.
IAQI_ROWS: tuple[int, ...] = (0, 50, 100, 150, 200, 300, 400, 500)

# Breakpoints per (pollutant, averaging) column, µg/m³ (CO mg/m³). Averaging codes: "1h" hourly
# mean, "24h" daily (24-hour) mean, "8h" 8-hour mean (moving, or the daily maximum).
_COMMON_BREAKPOINTS: dict[tuple[str, str], tuple[int, ...]] = {
    ("so2", "24h"): (0, 50, 150, 475, 800, 1600, 2100, 2620),
    ("so2", "1h"): (0, 150, 500, 650, 800),
    ("no2", "24h"): (0, 40, 80, 180, 280, 565, 750, 940),
    ("no2", "1h"): (0, 100, 200, 700, 1200, 2340, 3090, 3840),
    ("co", "24h"): (0, 2, 4, 14, 24, 36, 48, 60),
    ("co", "1h"): (0, 5, 10, 35, 60, 90, 120, 150),
    ("o3", "8h"): (0, 100, 160, 215, 265, 800),
    ("o3", "1h"): (0, 160, 200, 300, 400, 800, 1000, 1200),
}

AQI_BREAKPOINTS: dict[str, dict[tuple[str, str], tuple[int, ...]]] = {
    "2012": {
        **_COMMON_BREAKPOINTS,
        ("pm10", "24h"): (0, 50, 150, 250, 350, 420, 500, 600),
        ("pm25", "24h"): (0, 35, 75, 115, 150, 250, 350, 500),
    },
    "2026": {
        **_COMMON_BREAKPOINTS,
        ("pm10", "24h"): (0, 50, 120, 250, 350, 420, 500, 600),
        ("pm25", "24h"): (0, 35, 60, 115, 150, 250, 350, 500),
    },
}

# Upper AQI of each level (the last is open-ended): level, level_zh, category, category_zh, colour.
AQI_LEVELS: tuple[tuple[int | None, str, str, str, str, str], ...] = (
    (50, "I", "一级", "Excellent", "优", "#00E400"),
    (100, "II", "二级", "Good", "良", "#FFFF00"),
    (150, "III", "三级", "Lightly polluted", "轻度污染", "#FF7E00"),
    (200, "IV", "四级", "Moderately polluted", "中度污染", "#FF0000"),
    (300, "V", "五级", "Heavily polluted", "重度污染", "#99004C"),
    (None, "VI", "六级", "Severely polluted", "严重污染", "#7E0023"),
)

# Which breakpoint column each AQI input is read on (docs/standards.md §2.2). Input keys are the
# parameter codes; "o3_8h" is the O3 8-hour moving mean, "o3_8h_max" / "o3_1h_max" the O3 daily
# maximum 8-hour / 1-hour means. PM 1-hour means are read on the 24h columns.
AQI_HOURLY_COLUMNS: dict[str, dict[str, tuple[str, str]]] = {
    "2012": {
        "so2": ("so2", "1h"),
        "no2": ("no2", "1h"),
        "co": ("co", "1h"),
        "o3": ("o3", "1h"),
        "o3_8h": ("o3", "8h"),
        "pm10": ("pm10", "24h"),
        "pm25": ("pm25", "24h"),
    },
    "2026": {
        "so2": ("so2", "1h"),
        "no2": ("no2", "1h"),
        "co": ("co", "1h"),
        "o3": ("o3", "1h"),
        "pm10": ("pm10", "24h"),
        "pm25": ("pm25", "24h"),
    },
}
AQI_DAILY_COLUMNS: dict[str, dict[str, tuple[str, str]]] = {
    "2012": {
        "so2": ("so2", "24h"),
        "no2": ("no2", "24h"),
        "co": ("co", "24h"),
        "o3_1h_max": ("o3", "1h"),
        "o3_8h_max": ("o3", "8h"),
        "pm10": ("pm10", "24h"),
        "pm25": ("pm25", "24h"),
    },
    "2026": {
        "so2": ("so2", "24h"),
        "no2": ("no2", "24h"),
        "co": ("co", "24h"),
        "o3_8h_max": ("o3", "8h"),
        "pm10": ("pm10", "24h"),
        "pm25": ("pm25", "24h"),
    },
}

# Columns that stop below IAQI 500: the IAQI for a concentration above their top breakpoint.
# None means the edition defers to another index (2012: SO2 to its 24-hour moving mean, O3 8h to
# the O3 1-hour IAQI), which the report functions supply.
AQI_ABOVE_TOP: dict[str, dict[tuple[str, str], int | None]] = {
    "2012": {("so2", "1h"): None, ("o3", "8h"): None},
    "2026": {("so2", "1h"): 200, ("o3", "8h"): 300},
}

# HJ 663 (air quality assessment): editions in force from their first day (docs/standards.md §1).
HJ663_EDITIONS: tuple[tuple[str, date], ...] = (
    ("2013", date.min),
    ("2026", date(2026, 3, 1)),
)

# GB 3095: editions in force from their first day (Asia/Shanghai).
AIR_EDITIONS: tuple[tuple[str, date], ...] = (
    ("2012", date.min),
    ("2026_transition", date(2026, 3, 1)),
    ("2026_final", date(2031, 1, 1)),
)

# (pollutant, averaging, grade) -> limits for (2012, 2026_transition, 2026_final); None where
# no value is known (docs/standards.md §3.1). "8h" is the O3 daily maximum 8-hour mean.
# ⚠ SO2 and NO2 annual: 2012 from GB 3095-2012 Table 1 (docs/evaluation.md §4); the transition keeps
# them, as it changes only the particulate limits (its SO2 and NO2 24-h and 1-h limits are 2012's);
# the final values are not known here.
AIR_LIMITS: dict[tuple[str, str, int], tuple[float | None, float | None, float | None]] = {
    ("so2", "24h", 2): (150, 150, 50),
    ("so2", "1h", 2): (500, 500, 150),
    ("no2", "24h", 2): (80, 80, 50),
    ("no2", "1h", 2): (200, 200, 200),
    ("co", "24h", 2): (4, 4, 4),
    ("co", "1h", 2): (10, 10, 10),
    ("o3", "8h", 2): (160, 160, 160),
    ("o3", "1h", 2): (200, 200, 200),
    ("so2", "annual", 2): (60, 60, None),
    ("no2", "annual", 2): (40, 40, None),
    ("pm10", "24h", 2): (150, 120, 100),
    ("pm10", "annual", 2): (70, 60, 50),
    ("pm25", "24h", 2): (75, 60, 50),
    ("pm25", "annual", 2): (35, 30, 25),
    ("so2", "24h", 1): (50, 50, 50),
    ("so2", "1h", 1): (150, 150, 150),
    ("no2", "24h", 1): (80, 80, 50),
    ("no2", "1h", 1): (200, 200, 200),
    ("pm10", "24h", 1): (50, 50, 50),
    ("pm25", "24h", 1): (35, 35, 25),
    ("o3", "8h", 1): (100, 100, 100),
    ("o3", "1h", 1): (160, 160, 160),
}

# GB 3095 Table 4 (data validity): valid daily values a month (February) and a year need.
AIR_MIN_VALID_DAYS_MONTH = 27
AIR_MIN_VALID_DAYS_FEBRUARY = 25
AIR_MIN_VALID_DAYS_YEAR = 324
# HJ 663 §6.1.2: the O3 daily maximum 8-hour mean needs this many valid 8-hour means of its 17,
# unless the maximum of fewer exceeds the O3 8-hour limit.
O3_MDA8_MIN_VALID_WINDOWS = 14

# GB 3838-2002 Table 1, classes I..V, mg/L (fecal coliform per L): "≤" items.
SURFACE_WATER_MAX: dict[str, tuple[float, float, float, float, float]] = {
    "codmn": (2, 4, 6, 10, 15),
    "cod": (15, 15, 20, 30, 40),
    "bod5": (3, 3, 4, 6, 10),
    "nh3n": (0.15, 0.5, 1.0, 1.5, 2.0),
    "tn": (0.2, 0.5, 1.0, 1.5, 2.0),
    "cu": (0.01, 1.0, 1.0, 1.0, 1.0),
    "zn": (0.05, 1.0, 1.0, 2.0, 2.0),
    "fluoride": (1.0, 1.0, 1.0, 1.5, 1.5),
    "se": (0.01, 0.01, 0.01, 0.02, 0.02),
    "as": (0.05, 0.05, 0.05, 0.1, 0.1),
    "hg": (0.00005, 0.00005, 0.0001, 0.001, 0.001),
    "cd": (0.001, 0.005, 0.005, 0.005, 0.01),
    "cr6": (0.01, 0.05, 0.05, 0.05, 0.1),
    "pb": (0.01, 0.01, 0.05, 0.05, 0.1),
    "cn": (0.005, 0.05, 0.2, 0.2, 0.2),
    "phenol": (0.002, 0.002, 0.005, 0.01, 0.1),
    "petroleum": (0.05, 0.05, 0.05, 0.5, 1.0),
    "las": (0.2, 0.2, 0.2, 0.3, 0.3),
    "sulfide": (0.05, 0.1, 0.2, 0.5, 1.0),
    "fecal_coliform": (200, 2000, 10000, 20000, 40000),
}
# Total phosphorus differs between rivers and lakes/reservoirs.
SURFACE_WATER_TP_MAX: dict[str, tuple[float, float, float, float, float]] = {
    "river": (0.02, 0.1, 0.2, 0.3, 0.4),
    "lake": (0.01, 0.025, 0.05, 0.1, 0.2),
}
# Dissolved oxygen is "≥": class I is 7.5 (the 90 % saturation alternative is not used).
SURFACE_WATER_DO_MIN: tuple[float, float, float, float, float] = (7.5, 6, 5, 3, 2)
SURFACE_WATER_PH: tuple[float, float] = (6, 9)
# Items of Table 1 that are not evaluated for a water body (water temperature has no limit).
SURFACE_WATER_NOT_EVALUATED: dict[str, frozenset[str]] = {
    "river": frozenset({"water_temp", "tn", "fecal_coliform"}),
    "lake": frozenset({"water_temp"}),
}
SURFACE_WATER_ITEMS: tuple[str, ...] = (
    "water_temp",
    "ph",
    "do",
    "codmn",
    "cod",
    "bod5",
    "nh3n",
    "tp",
    "tn",
    "cu",
    "zn",
    "fluoride",
    "se",
    "as",
    "hg",
    "cd",
    "cr6",
    "pb",
    "cn",
    "phenol",
    "petroleum",
    "las",
    "sulfide",
    "fecal_coliform",
)

# GB 3097-1997, classes 1..4, mg/L. cod_mn_alkaline is COD by alkaline permanganate, din is
# inorganic nitrogen (NO3+NO2+NH4 as N), po4p is reactive phosphate as P.
SEA_WATER_MAX: dict[str, tuple[float, float, float, float]] = {
    "cod_mn_alkaline": (2, 3, 4, 5),
    "bod5": (1, 3, 4, 5),
    "din": (0.20, 0.30, 0.40, 0.50),
    "po4p": (0.015, 0.030, 0.030, 0.045),
    "petroleum": (0.05, 0.05, 0.30, 0.50),
    # ⚠ the metal rows rest on one source (docs/standards.md §5).
    "hg": (0.00005, 0.0002, 0.0002, 0.0005),
    "cd": (0.001, 0.005, 0.010, 0.010),
    "pb": (0.001, 0.005, 0.010, 0.050),
    "cu": (0.005, 0.010, 0.050, 0.050),
    "zn": (0.020, 0.050, 0.10, 0.50),
    "as": (0.020, 0.030, 0.050, 0.050),
}
# Dissolved oxygen must be strictly greater than the class value.
SEA_WATER_DO_ABOVE: tuple[float, float, float, float] = (6, 5, 4, 3)
SEA_WATER_PH: tuple[tuple[float, float], ...] = ((7.8, 8.5), (7.8, 8.5), (6.8, 8.8), (6.8, 8.8))
SEA_WATER_ITEMS: tuple[str, ...] = ("ph", "do", *SEA_WATER_MAX)

SURFACE_CLASS_LABELS: tuple[str, ...] = ("I", "II", "III", "IV", "V", "劣V")
SEA_CLASS_LABELS: tuple[str, ...] = ("1", "2", "3", "4", "劣四类")

# Qualitative description of a GB 3838 class (index = class - 1): Chinese, English.
SURFACE_WATER_QUALITY: tuple[tuple[str, str], ...] = (
    ("优", "excellent"),
    ("优", "excellent"),
    ("良好", "good"),
    ("轻度污染", "lightly polluted"),
    ("中度污染", "moderately polluted"),
    ("重度污染", "heavily polluted"),
)
