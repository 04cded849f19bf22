-- Deferred retries (DESIGN §4, §11): a contact whose round of short retries is used up
-- waits `pending` until `next_attempt_at`; `deferred_rounds` rounds are done and
-- `earlier_codes` holds every attempt's code of those rounds, in order, so the final
-- reason can list them all whichever pod runs the last round.
ALTER TABLE contacts ADD COLUMN next_attempt_at timestamptz;
ALTER TABLE contacts ADD COLUMN deferred_rounds integer NOT NULL DEFAULT 0;
ALTER TABLE contacts ADD COLUMN earlier_codes jsonb NOT NULL DEFAULT '[]'::jsonb;

-- Both indexes hold only the contacts waiting for a deferred round (a small set), so
-- they cost nothing on the hot path: the re-drive finds the due ones in time order, and
-- `status` counts a campaign's deferred contacts from its own slice.
CREATE INDEX contacts_deferred_due ON contacts (next_attempt_at)
    WHERE status = 'pending' AND next_attempt_at IS NOT NULL;
CREATE INDEX contacts_deferred_by_campaign ON contacts (campaign_id)
    WHERE status = 'pending' AND next_attempt_at IS NOT NULL;

-- Auto-pause (§11) reads a campaign's last AUTO_PAUSE_WINDOW final outcomes.
CREATE INDEX contacts_recent_outcomes ON contacts (campaign_id, finished_at)
    WHERE finished_at IS NOT NULL;

-- Why a campaign paused itself (null otherwise), and since when its outcomes count
-- toward auto-pause (set by `resume`, so a resumed campaign is judged afresh).
ALTER TABLE campaigns ADD COLUMN status_reason text;
ALTER TABLE campaigns ADD COLUMN outcomes_judged_from timestamptz;
