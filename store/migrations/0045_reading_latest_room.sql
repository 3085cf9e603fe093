-- reading_latest takes an update for every new reading (13,000 a second at 2,000 HJ 212
-- packets a second) on a few pages. An update stays on its row's page (a HOT update: no new
-- index entry) only if the page has room, and the room of the versions it replaced comes back
-- only once no transaction may still see them: while the alert loop's round runs (its
-- transaction holds that horizon back for a few tenths of a second), the versions pile up. In
-- full pages 40 % of the updates moved rows to new pages with an index entry each, and the
-- table grew from a dozen pages to 1,400 in half a minute. Each page now keeps nine tenths
-- free.
ALTER TABLE reading_latest SET (fillfactor = 10);

-- The rows already there are written again, so that their pages get that room too.
CREATE TEMP TABLE reading_latest_rows ON COMMIT DROP AS SELECT * FROM reading_latest;
TRUNCATE reading_latest;
INSERT INTO reading_latest SELECT * FROM reading_latest_rows ORDER BY 1, 2, 3;
