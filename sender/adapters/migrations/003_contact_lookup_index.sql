-- Claims, held-lease checks and outcome writes look contacts up by id within one status.
-- With (campaign_id, status) alone, a planner on stale statistics (a new 100,000-contact
-- campaign in a big table) read every pending contact of the campaign for each page's
-- claim: about 1 s per page instead of 9 ms. With contact_id in the key every lookup is
-- direct, whatever the statistics say; status counts, failure listings and the
-- completion check use its (campaign_id, status) prefix as before.
CREATE INDEX IF NOT EXISTS contacts_by_status_and_id ON contacts (campaign_id, status, contact_id);
DROP INDEX IF EXISTS contacts_by_status;

-- Every contact is updated twice (claim, outcome), so dead rows pile up fast: vacuum and
-- analyze after 2 % of the table changes rather than the default 20 % / 10 %.
ALTER TABLE contacts SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);
