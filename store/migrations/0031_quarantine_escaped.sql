-- A quarantined item's text columns hold what was received. Where that text has characters
-- PostgreSQL text cannot hold (NUL, lone surrogates, bytes that were not UTF-8), every text column
-- of the row is written escaped and `escaped` is true; store.intake.escape_text says how, and
-- store.intake.unescape_text gives back the original. A constant default adds no rewrite.
ALTER TABLE rejected_reading ADD COLUMN escaped boolean NOT NULL DEFAULT false;
