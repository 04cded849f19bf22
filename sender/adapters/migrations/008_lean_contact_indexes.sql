-- Every index on contacts is written once per stored contact: at a `campaign start` of
-- 1 M rows, `(campaign_id, status, contact_id)` cost 2.2 s of the 5.0 s COPY (2.8 s
-- without it; the primary key alone 2.3 s). Nothing needs it any more:
--   claims, held checks, outcomes, renewals and purges probe the primary key;
--   the completion check reads campaign_counts (kept in the same transactions);
--   `resume` (pending and lapsed contacts) reads the campaign's primary-key range,
--   which a start's contacts fill anyway.
-- Failure listings and `retry-failed` keep an index of their own, partial so that
-- storing pending contacts and writing `sent` outcomes never touch it.
CREATE INDEX IF NOT EXISTS contacts_failed ON contacts (campaign_id, contact_id)
    WHERE status = 'failed';
DROP INDEX IF EXISTS contacts_by_status_and_id;
