-- Tenants: a requester whose orders for a worker are queued apart, for the claims of the WPEs
-- dedicated to it (Store::put_tenant). An order's tenant is decided when it is submitted: the
-- requester's, if the requester is a tenant of the worker then; NULL (the shared queue)
-- otherwise.
-- A tenant may be named before its worker registers (a WPE host may start before the KME's).
CREATE TABLE tenants (
    worker_id text COLLATE "C" NOT NULL,
    requester_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (worker_id, requester_id)
);

ALTER TABLE work_orders ADD COLUMN tenant text COLLATE "C";

-- A claim takes the oldest queued order of one queue: a worker's shared one (tenant IS NULL) or
-- a tenant's.
DROP INDEX work_orders_queued;
CREATE INDEX work_orders_queued ON work_orders (worker_id, tenant, seq)
    WHERE response IS NULL AND holder IS NULL;
