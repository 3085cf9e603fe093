"""The monthly joint bulletin (docs/evaluation.md §8): assembled from the air and water reports
(assemble), written as CSV tables in a zip (tables) and as a printable bilingual HTML page with
inline SVG charts (page, charts)."""
