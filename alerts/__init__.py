"""Alert engine: standards, window statistics, rules, notifications."""
