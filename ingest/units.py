"""Unit normalisation to each parameter's canonical unit (docs/standards.md §7, §3.3)."""

from __future__ import annotations

_ALIASES = {
    "µg/m3": "ug/m3",
    "μg/m3": "ug/m3",
    "ug/m^3": "ug/m3",
    "µg/m^3": "ug/m3",
    "μg/m^3": "ug/m3",
    "mg/m^3": "mg/m3",
    "mg/l": "mg/L",
    "ug/l": "ug/L",
    "µg/l": "ug/L",
    "μg/l": "ug/L",
    "µs/cm": "uS/cm",
    "μs/cm": "uS/cm",
    "us/cm": "uS/cm",
    "ntu": "NTU",
    "°c": "degC",
    "℃": "degC",
    "c": "degC",
    "degc": "degC",
    "deg": "deg",
    "°": "deg",
    "degree": "deg",
    "degrees": "deg",
    "": "1",
    "ph": "1",
    "1": "1",
    "per l": "per L",
    "/l": "per L",
    "个/l": "per L",
    "mpn/l": "per L",
    "hpa": "hPa",
    "kpa": "kPa",
    "pa": "Pa",
    "m/s": "m/s",
    "%": "%",
    "ppb": "ppb",
    "ppm": "ppm",
    "psu": "psu",
    "‰": "psu",
}

# Same-dimension conversions: (from, to) -> factor.
_FACTORS = {
    ("mg/m3", "ug/m3"): 1000.0,
    ("ug/m3", "mg/m3"): 0.001,
    ("mg/L", "ug/L"): 1000.0,
    ("ug/L", "mg/L"): 0.001,
    ("kPa", "hPa"): 10.0,
    ("Pa", "hPa"): 0.01,
}

# Gas mixing ratios at 25 °C and 1013.25 hPa (docs/standards.md §3.3): µg/m³ per ppb, mg/m³ per ppm.
_PPB_TO_UG_M3 = {"so2": 2.62, "no2": 1.88, "o3": 1.96}
_PPM_TO_MG_M3 = {"co": 1.145}


class UnitError(ValueError):
    """A unit that cannot be converted to the parameter's canonical unit."""


def canonical_unit(unit: str) -> str:
    """The canonical spelling of a unit string, or the string itself if it has no alias."""
    text = unit.strip().replace("³", "3")
    return _ALIASES.get(text.lower(), _ALIASES.get(text, text))


def conversion_factor(parameter: str, unit: str, canonical: str) -> float:
    """Multiply a value in `unit` by this to get it in `canonical`; UnitError if impossible."""
    given = canonical_unit(unit)
    if given == canonical:
        return 1.0
    if (given, canonical) in _FACTORS:
        return _FACTORS[(given, canonical)]
    if given in ("ppb", "ppm"):
        scale = 1.0 if given == "ppb" else 1000.0  # 1 ppm = 1000 ppb
        if parameter in _PPB_TO_UG_M3:
            per_ppb = _PPB_TO_UG_M3[parameter]
            factor = {"ug/m3": per_ppb, "mg/m3": per_ppb / 1000.0}.get(canonical)
            if factor is not None:
                return factor * scale
        if parameter in _PPM_TO_MG_M3:
            per_ppm = _PPM_TO_MG_M3[parameter] / 1000.0 * scale
            factor = {"mg/m3": per_ppm, "ug/m3": per_ppm * 1000.0}.get(canonical)
            if factor is not None:
                return factor
        raise UnitError(
            f"{given} is only accepted for the gases SO2, NO2, O3 and CO, not {parameter}"
        )
    raise UnitError(f"unit {unit!r} cannot be converted to {canonical} for {parameter}")
