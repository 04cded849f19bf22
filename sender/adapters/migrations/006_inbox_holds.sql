-- `sender inbox pause`: an operator's hold on one inbox, across every campaign and pod.
-- Redis carries it to the consumers (`sender:hold:{inbox}`); this row is the truth they
-- reload it from when Redis lost it (a restart without persistence).
CREATE TABLE inbox_holds (
    inbox_id text PRIMARY KEY CHECK (length(inbox_id) BETWEEN 1 AND 200),
    held_at  timestamptz NOT NULL DEFAULT now()
);
