"""Periodic evaluation (docs/evaluation.md §1-§7): pure functions over numpy arrays, no database.

- rules: the rule set (HJ 663 / GB 3095 / HJ 633 editions and the settings) of a day;
- periods: months, quarters, years, ranges, and their parts by rule set;
- validity: the valid days a statistic needs, and `Insufficient` when it is short;
- air_days: station, city daily values from hourly means (day means, O3 MDA8);
- air: statistics, days and shares, composite index, region, published report;
- water, sea: section and group evaluation (GB 3838), sea points and areas (GB 3097);
- episodes: the joint regional-episode rule.
"""
