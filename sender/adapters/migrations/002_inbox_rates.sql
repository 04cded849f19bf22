-- Per-inbox rate overrides set by `sender inbox set-rate`; consumers poll them.
CREATE TABLE inbox_rates (
    inbox_id     text PRIMARY KEY,
    rate_per_sec double precision NOT NULL CHECK (rate_per_sec > 0),
    burst        integer NOT NULL CHECK (burst >= 1),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
