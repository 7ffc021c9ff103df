-- The store's tables. Names are unqualified: the connection's search_path decides the schema.
-- Ids and keys are text in the "C" collation, so that look-ups page in byte order.

-- Workers: the typed record as JSON, and the fields look-ups filter on.
CREATE TABLE workers (
    id text COLLATE "C" PRIMARY KEY,
    record text NOT NULL,
    worker_type bigint NOT NULL,
    organization_id text COLLATE "C" NOT NULL,
    application_type_id text COLLATE "C" NOT NULL
);
CREATE INDEX workers_by_type ON workers (worker_type, id);
CREATE INDEX workers_by_organization ON workers (organization_id, id);
CREATE INDEX workers_by_application_type ON workers (application_type_id, id);

-- Submission order (queues are first in, first out per worker) and finish order (retention
-- purges the oldest finished order first).
CREATE SEQUENCE work_order_seq;
CREATE SEQUENCE work_order_finish_seq;

-- Work orders. Queued: no holder, no response. Processing: a holder and its lease expiry
-- (milliseconds, as the callers count them). Finished: a response (NULL until then: the
-- queue-depth query, sql/queue_depth.sql, counts the orders without one).
CREATE TABLE work_orders (
    id text COLLATE "C" PRIMARY KEY,
    worker_id text COLLATE "C" NOT NULL REFERENCES workers (id),
    seq bigint NOT NULL DEFAULT nextval('work_order_seq'),
    request bytea NOT NULL,
    holder text,
    lease_expires bigint,
    finish_seq bigint,
    failed boolean,
    response text,
    CHECK ((holder IS NULL) = (lease_expires IS NULL)),
    CHECK ((response IS NULL) = (finish_seq IS NULL AND failed IS NULL))
);
CREATE INDEX work_orders_queued ON work_orders (worker_id, seq)
    WHERE response IS NULL AND holder IS NULL;
CREATE INDEX work_orders_leased ON work_orders (lease_expires)
    WHERE response IS NULL AND holder IS NOT NULL;
CREATE INDEX work_orders_finished ON work_orders (finish_seq) WHERE response IS NOT NULL;

-- How many orders are stored and finished, in sharded rows: a transaction adds its changes to
-- the row of its connection (pg_backend_pid() % 16), so that concurrent submissions and
-- completions do not queue up behind one counter row. The totals are the sums.
CREATE TABLE order_counts (
    shard integer PRIMARY KEY,
    stored bigint NOT NULL,
    finished bigint NOT NULL
);
INSERT INTO order_counts (shard, stored, finished) SELECT s, 0, 0 FROM generate_series(0, 15) s;

-- What keeps a purged order's id from being accepted again: the first 16 bytes of SHA-256 of
-- the id (UTF-8), written in the transaction that purges the order.
CREATE FUNCTION purged_key(id text) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT substring(sha256(convert_to(id, 'UTF8')) FROM 1 FOR 16) $$;
CREATE TABLE purged_orders (
    id_key bytea PRIMARY KEY
);

-- Receipts: the create request as JSON, the fields look-ups filter on (the current status
-- follows every update), the worker of the order, and, while the receipt awaits its worker's
-- update, when it started to (receipt_awaiting_seq).
CREATE SEQUENCE receipt_awaiting_seq;
CREATE TABLE receipts (
    work_order_id text COLLATE "C" PRIMARY KEY REFERENCES work_orders (id) ON DELETE CASCADE,
    order_worker_id text COLLATE "C" NOT NULL,
    worker_service_id text COLLATE "C",
    worker_id text COLLATE "C",
    requester_id text COLLATE "C",
    create_status bigint NOT NULL,
    current_status bigint NOT NULL,
    receipt text NOT NULL,
    update_count bigint NOT NULL DEFAULT 0,
    awaiting_since bigint
);
CREATE INDEX receipts_by_worker_service ON receipts (worker_service_id, work_order_id);
CREATE INDEX receipts_by_worker ON receipts (worker_id, work_order_id);
CREATE INDEX receipts_by_requester ON receipts (requester_id, work_order_id);
CREATE INDEX receipts_by_status ON receipts (current_status, work_order_id);
CREATE INDEX receipts_awaiting ON receipts (order_worker_id, awaiting_since)
    WHERE awaiting_since IS NOT NULL;

-- Receipt updates as JSON, numbered from 0 per receipt.
CREATE TABLE receipt_updates (
    work_order_id text COLLATE "C" NOT NULL
        REFERENCES receipts (work_order_id) ON DELETE CASCADE,
    idx bigint NOT NULL,
    body text NOT NULL,
    PRIMARY KEY (work_order_id, idx)
);

-- Sealed blobs by key; an older version never replaces a newer one.
CREATE TABLE sealed (
    key text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL,
    blob bytea NOT NULL
);
