-- The bounds `sender inbox set-rate` checks, held by the database too: float8 accepts
-- 'NaN' and 'Infinity', and an infinite rate makes every consumer's limiter spin.
-- Rows stored before these checks are brought inside them first: NaN is dropped (the
-- inbox goes back to INBOX_RATE_PER_SEC), anything too fast is clamped to the maximum.
DELETE FROM inbox_rates WHERE rate_per_sec = 'NaN'::float8;
UPDATE inbox_rates SET rate_per_sec = 1000000 WHERE rate_per_sec > 1000000;
UPDATE inbox_rates SET rate_per_sec = 0.001 WHERE rate_per_sec < 0.001;
UPDATE inbox_rates SET burst = 1000000 WHERE burst > 1000000;

ALTER TABLE inbox_rates
    ADD CONSTRAINT inbox_rates_rate_finite_and_bounded
        CHECK (rate_per_sec <> 'NaN'::float8 AND rate_per_sec >= 0.001
               AND rate_per_sec <= 1000000 AND rate_per_sec < 'Infinity'::float8),
    ADD CONSTRAINT inbox_rates_burst_bounded CHECK (burst BETWEEN 1 AND 1000000);
