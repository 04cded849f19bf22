-- Campaigns and their contacts: the system of record.
CREATE TABLE campaigns (
    campaign_id    text PRIMARY KEY,
    inbox_id       text NOT NULL,
    message        jsonb NOT NULL,
    status         text NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'paused', 'stopped', 'completed')),
    started_by_cli boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    completed_at   timestamptz
);

CREATE TABLE contacts (
    campaign_id      text NOT NULL REFERENCES campaigns (campaign_id) ON DELETE CASCADE,
    contact_id       text NOT NULL,
    to_address       text NOT NULL,
    variables        jsonb NOT NULL DEFAULT '{}'::jsonb,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    reason           text,
    last_status_code integer,
    lease_owner      text,
    lease_until      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    PRIMARY KEY (campaign_id, contact_id)
);

-- Lease renewal touches only the rows a process holds.
CREATE INDEX contacts_leased_by ON contacts (lease_owner) WHERE status = 'sending';
-- Status counts and failure listings per campaign.
CREATE INDEX contacts_by_status ON contacts (campaign_id, status);
