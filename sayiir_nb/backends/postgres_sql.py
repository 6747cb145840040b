"""The PostgreSQL dialect: the schema's migrations and the server-side
functions that make a step's write, a claim and a heartbeat one round trip
each.

Everything lives in one PostgreSQL schema (``sayiir`` by default), written
here as ``{s}``. Times are epoch seconds; lease expiry is judged by the
server's clock (``{s}.now_epoch()``), so workers on several machines agree on
it. Errors raised on purpose carry their own SQLSTATE: ``SN001`` for a lease
that is no longer current, ``SN002`` for a batch that contradicts the store.
"""

from __future__ import annotations

LEASE_LOST = "SN001"
CONTRADICTION = "SN002"

TABLES = """
CREATE TABLE {s}.runs (
    run_id text PRIMARY KEY,
    workflow_name text NOT NULL,
    definition_hash text NOT NULL,
    state text NOT NULL,
    input_json text NOT NULL,
    input_digest text NOT NULL,
    codec text NOT NULL,
    output_json text,
    error_type text,
    error_message text,
    error_traceback text,
    error_step text,
    created_epoch double precision NOT NULL,
    updated_epoch double precision NOT NULL,
    wake_epoch double precision,
    requested text
);
CREATE INDEX runs_queue ON {s}.runs (coalesce(wake_epoch, 0), created_epoch)
    WHERE state IN ('pending', 'running', 'waiting');

-- Fences come from one sequence, so a claim's fence is never reused, not
-- even after a run is started over or deleted and created again.
CREATE SEQUENCE {s}.fences;

CREATE TABLE {s}.leases (
    run_id text PRIMARY KEY,
    owner text,
    fence bigint NOT NULL,
    expires_epoch double precision
);

CREATE TABLE {s}.attempts (
    run_id text NOT NULL,
    step_id text NOT NULL,
    task_name text NOT NULL,
    attempt integer NOT NULL,
    state text NOT NULL,
    scheduled_epoch double precision,
    started_epoch double precision,
    ended_epoch double precision,
    wait_before_s double precision NOT NULL,
    owner text NOT NULL,
    output_json text,
    error_type text,
    error_message text,
    error_traceback text,
    PRIMARY KEY (run_id, step_id, attempt)
);

CREATE TABLE {s}.signals (
    signal_id text PRIMARY KEY,
    run_id text NOT NULL,
    name text NOT NULL,
    payload_json text NOT NULL,
    sent_epoch double precision NOT NULL,
    consumed_epoch double precision
);
CREATE INDEX signals_open ON {s}.signals (run_id, name, sent_epoch)
    WHERE consumed_epoch IS NULL;

-- The parts of a run that workers claim one by one: the branches of a
-- parallel and the items of a fan-out. The run's own lease is in leases.
CREATE TABLE {s}.units (
    run_id text NOT NULL,
    unit_id text NOT NULL,
    parent_id text NOT NULL,
    kind text NOT NULL,
    node_prefix text NOT NULL,
    node_id text NOT NULL,
    part text NOT NULL,
    input_json text NOT NULL,
    context_json text,
    state text NOT NULL,
    wake_epoch double precision,
    max_claimed integer,
    owner text,
    fence bigint NOT NULL DEFAULT 0,
    expires_epoch double precision,
    claimed_epoch double precision,
    created_epoch double precision NOT NULL,
    PRIMARY KEY (run_id, unit_id)
);
CREATE INDEX units_open ON {s}.units (created_epoch)
    WHERE state IN ('ready', 'claimed', 'waiting');

-- Task limits shared by every worker: slots for a concurrency limit, the
-- next free time for a rate limit.
CREATE TABLE {s}.task_slots (
    task_name text NOT NULL,
    slot integer NOT NULL,
    holder text,
    expires_epoch double precision,
    PRIMARY KEY (task_name, slot)
);
CREATE TABLE {s}.task_rates (
    task_name text PRIMARY KEY,
    next_epoch double precision NOT NULL
);
"""

FUNCTIONS = """
CREATE OR REPLACE FUNCTION {s}.now_epoch() RETURNS double precision
LANGUAGE sql VOLATILE AS $$ SELECT extract(epoch FROM clock_timestamp())::float8 $$;

-- Apply one write batch if the lease (run_id, unit_id, fence) is current.
-- Returns the control request stored for the run (cancelled, paused) or NULL.
CREATE OR REPLACE FUNCTION {s}.write_batch(
    p_run text, p_unit text, p_fence bigint, p jsonb, p_now double precision
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_requested text;
    v_since float8;
    v_point text := p->'checkpoint'->>'step_id';
    a jsonb;
BEGIN
    IF p_unit = '' THEN
        PERFORM 1 FROM {s}.leases
            WHERE run_id = p_run AND fence = p_fence AND owner IS NOT NULL FOR SHARE;
    ELSE
        PERFORM 1 FROM {s}.units
            WHERE run_id = p_run AND unit_id = p_unit AND fence = p_fence
            AND state = 'claimed' FOR SHARE;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the lease (fence %) of run % is no longer current',
            p_fence, p_run USING ERRCODE = 'SN001';
    END IF;

    IF v_point IS NOT NULL AND EXISTS (
        SELECT 1 FROM {s}.attempts WHERE run_id = p_run AND step_id = v_point
        AND output_json IS NOT NULL
    ) THEN
        RAISE EXCEPTION 'run % already has a checkpoint for step %', p_run, v_point
            USING ERRCODE = 'SN002';
    END IF;

    INSERT INTO {s}.attempts
    SELECT * FROM jsonb_populate_recordset(NULL::{s}.attempts, p->'inserts');

    FOR a IN SELECT * FROM jsonb_array_elements(p->'updates') LOOP
        UPDATE {s}.attempts SET
            state = a->>'state',
            scheduled_epoch = (a->>'scheduled_epoch')::float8,
            started_epoch = (a->>'started_epoch')::float8,
            ended_epoch = (a->>'ended_epoch')::float8,
            wait_before_s = (a->>'wait_before_s')::float8,
            owner = a->>'owner',
            output_json = a->>'output_json',
            error_type = a->>'error_type',
            error_message = a->>'error_message',
            error_traceback = a->>'error_traceback'
        WHERE run_id = p_run AND step_id = a->>'step_id'
            AND attempt = (a->>'attempt')::int;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'run %: attempt % of step % is not stored',
                p_run, a->>'attempt', a->>'step_id' USING ERRCODE = 'SN002';
        END IF;
    END LOOP;

    IF p->'consume_signal' IS NOT NULL AND jsonb_typeof(p->'consume_signal') <> 'null'
    THEN
        UPDATE {s}.signals SET consumed_epoch = p_now
            WHERE run_id = p_run AND signal_id = p->>'consume_signal'
            AND consumed_epoch IS NULL;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'run %: signal % was consumed already',
                p_run, p->>'consume_signal' USING ERRCODE = 'SN002';
        END IF;
    END IF;

    IF jsonb_typeof(p->'run') = 'object' THEN
        SELECT updated_epoch INTO v_since FROM {s}.runs WHERE run_id = p_run;
        UPDATE {s}.runs SET
            state = p->'run'->>'state',
            output_json = p->'run'->>'output_json',
            error_type = p->'run'->>'error_type',
            error_message = p->'run'->>'error_message',
            error_traceback = p->'run'->>'error_traceback',
            error_step = p->'run'->>'error_step',
            wake_epoch = (p->'run'->>'wake_epoch')::float8,
            updated_epoch = p_now,
            definition_hash = coalesce(p->'run'->>'definition_hash', definition_hash),
            -- a request stays until the run reaches a state that answers it
            requested = CASE WHEN p->'run'->>'state' IN ('running', 'waiting',
                'pending') THEN requested END
        WHERE run_id = p_run
        RETURNING requested INTO v_requested;
        -- A run that parks may have missed what it waits for: a signal sent
        -- since its last write (send_signal wakes only runs already waiting),
        -- or a part that changed state meanwhile. It is then due at once.
        IF p->'run'->>'state' = 'waiting' AND (
            EXISTS (SELECT 1 FROM {s}.signals g WHERE g.run_id = p_run
                AND g.consumed_epoch IS NULL AND g.sent_epoch >= v_since - 1)
            OR EXISTS (SELECT 1 FROM {s}.units u WHERE u.run_id = p_run
                AND (u.state IN ('ready', 'claimed')
                     OR (u.state = 'waiting' AND u.wake_epoch <= p_now)))
        ) THEN
            UPDATE {s}.runs SET wake_epoch = least(coalesce(wake_epoch, p_now), p_now)
                WHERE run_id = p_run;
        END IF;
        IF p->'run'->>'state' IN ('pending', 'waiting') THEN
            PERFORM pg_notify('{s}_work', p_run);
        END IF;
        PERFORM pg_notify('{s}_runs', p_run);
    ELSE
        -- a part of a run stops too once the run was cancelled or paused
        SELECT CASE WHEN state IN ('cancelled', 'paused') THEN state
            ELSE requested END INTO v_requested FROM {s}.runs WHERE run_id = p_run;
    END IF;
    RETURN v_requested;
END $$;

-- End the claim of a part: done, failed, waiting (until p_wake, or a
-- signal) or ready (handed back). A run that parked while its parts went on
-- is woken when one ends; a part that parks just as a signal arrives is due
-- at once.
CREATE OR REPLACE FUNCTION {s}.finish_unit(
    p_run text, p_unit text, p_fence bigint, p_state text, p_wake float8,
    p_now float8
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_claimed float8;
BEGIN
    UPDATE {s}.units SET state = p_state, wake_epoch = p_wake, owner = NULL,
        expires_epoch = NULL
    WHERE run_id = p_run AND unit_id = p_unit AND fence = p_fence
        AND state = 'claimed'
    RETURNING claimed_epoch INTO v_claimed;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF p_state = 'waiting' AND EXISTS (SELECT 1 FROM {s}.signals g
        WHERE g.run_id = p_run AND g.consumed_epoch IS NULL
        AND g.sent_epoch >= coalesce(v_claimed, 0) - 1)
    THEN
        UPDATE {s}.units SET wake_epoch = least(coalesce(p_wake, p_now), p_now)
            WHERE run_id = p_run AND unit_id = p_unit;
    END IF;
    IF p_state IN ('done', 'failed') THEN
        UPDATE {s}.runs SET wake_epoch = p_now
            WHERE run_id = p_run AND state = 'waiting'
            AND (wake_epoch IS NULL OR wake_epoch > p_now);
    END IF;
    PERFORM pg_notify('{s}_work', p_run);
    PERFORM pg_notify('{s}_units', p_run);
    RETURN true;
END $$;

-- Take one of a task's p_limit slots for p_holder; NULL if all are held.
CREATE OR REPLACE FUNCTION {s}.acquire_slot(
    p_task text, p_limit int, p_holder text, p_lease float8
) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    v_slot int;
BEGIN
    INSERT INTO {s}.task_slots (task_name, slot)
        SELECT p_task, generate_series(0, p_limit - 1) ON CONFLICT DO NOTHING;
    UPDATE {s}.task_slots t SET holder = p_holder,
        expires_epoch = {s}.now_epoch() + p_lease
    WHERE (t.task_name, t.slot) = (
        SELECT c.task_name, c.slot FROM {s}.task_slots c
        WHERE c.task_name = p_task AND c.slot < p_limit
          AND (c.holder IS NULL OR c.expires_epoch < {s}.now_epoch())
        ORDER BY c.slot LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING t.slot INTO v_slot;
    RETURN v_slot;
END $$;

-- Take the lease of one run if nobody holds a live one.
CREATE OR REPLACE FUNCTION {s}.claim_run(p_run text, p_owner text, p_lease float8)
RETURNS TABLE (fence bigint, expires_epoch float8) LANGUAGE sql AS $$
    INSERT INTO {s}.leases AS l VALUES (
        p_run, p_owner, nextval('{s}.fences'), {s}.now_epoch() + p_lease)
    ON CONFLICT (run_id) DO UPDATE SET
        owner = excluded.owner, fence = excluded.fence,
        expires_epoch = excluded.expires_epoch
    WHERE l.owner IS NULL OR l.expires_epoch < {s}.now_epoch()
    RETURNING l.fence, l.expires_epoch
$$;

-- Claim a part of a running run: of one parallel or fan-out (p_run and
-- p_parent) or of any run (NULL). A fan-out's parts carry max_claimed, its
-- concurrency: an advisory lock per fan-out makes the count and the claim
-- one step, so no more than that are claimed at once, whichever worker
-- claims them.
CREATE OR REPLACE FUNCTION {s}.claim_unit(
    p_owner text, p_lease float8, p_now float8, p_run text, p_parent text,
    p_names text[]
) RETURNS TABLE (o_run text, o_unit text, o_fence bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_now float8 := {s}.now_epoch();
    v_full text[] := '{}';  -- fan-outs found at their limit
    c record;
BEGIN
    LOOP
        -- one row at a time: a row locked here is one no other worker gets
        SELECT u.run_id, u.unit_id, u.parent_id, u.max_claimed INTO c
        FROM {s}.units u
        JOIN {s}.runs r ON r.run_id = u.run_id AND r.state = 'running'
            AND r.requested IS NULL  -- a cancel or pause is on its way
            AND (p_names IS NULL OR r.workflow_name = ANY(p_names))
        WHERE (p_run IS NULL OR (u.run_id = p_run AND u.parent_id = p_parent))
          AND (u.state = 'ready'
               OR (u.state = 'claimed' AND u.expires_epoch < v_now)
               OR (u.state = 'waiting' AND u.wake_epoch <= p_now))
          AND NOT (u.run_id || chr(31) || u.parent_id = ANY(v_full))
        ORDER BY u.created_epoch LIMIT 1
        FOR UPDATE OF u SKIP LOCKED;
        EXIT WHEN NOT FOUND;
        IF c.max_claimed IS NOT NULL THEN
            PERFORM pg_advisory_xact_lock(
                hashtext('sayiir-nb fan-out ' || c.run_id || chr(31) || c.parent_id));
            IF (SELECT count(*) FROM {s}.units x WHERE x.run_id = c.run_id
                AND x.parent_id = c.parent_id AND x.state = 'claimed'
                AND x.expires_epoch >= v_now) >= c.max_claimed THEN
                v_full := v_full || (c.run_id || chr(31) || c.parent_id);
                CONTINUE;
            END IF;
        END IF;
        UPDATE {s}.units u SET state = 'claimed', owner = p_owner,
            fence = nextval('{s}.fences'), expires_epoch = v_now + p_lease,
            claimed_epoch = p_now
        WHERE u.run_id = c.run_id AND u.unit_id = c.unit_id
        RETURNING u.run_id, u.unit_id, u.fence INTO o_run, o_unit, o_fence;
        RETURN NEXT;
        RETURN;
    END LOOP;
END $$;

-- Claim the next runnable work: a part of a running run first (it helps a
-- run that is already under way), else a run that is pending, due or whose
-- owner's lease lapsed. kind is 'unit', 'run' or 'none'; for 'none',
-- next_due_epoch says when something is due next (NULL: nothing planned).
CREATE OR REPLACE FUNCTION {s}.claim_next(
    p_owner text, p_lease float8, p_now float8, p_kinds text, p_names text[]
) RETURNS TABLE (
    kind text, run_id text, unit_id text, fence bigint, expires_epoch float8,
    next_due_epoch float8
) LANGUAGE plpgsql AS $$
DECLARE
    v_now float8 := {s}.now_epoch();
    v_run text;
    v_unit text;
    v_fence bigint;
    v_taken text[] := '{}';
BEGIN
    IF position('unit' in p_kinds) > 0 THEN
        SELECT c.o_run, c.o_unit, c.o_fence INTO v_run, v_unit, v_fence
            FROM {s}.claim_unit(p_owner, p_lease, p_now, NULL, NULL, p_names) c;
        IF v_run IS NOT NULL THEN
            RETURN QUERY SELECT 'unit'::text, v_run, v_unit, v_fence,
                v_now + p_lease, NULL::float8;
            RETURN;
        END IF;
    END IF;

    IF position('run' in p_kinds) > 0 THEN
        LOOP
            -- one row at a time, so that other workers claim the next ones
            SELECT r.run_id INTO v_run FROM {s}.runs r
            LEFT JOIN {s}.leases l ON l.run_id = r.run_id
            WHERE r.state IN ('pending', 'running', 'waiting')
              AND (l.owner IS NULL OR l.expires_epoch < v_now)
              AND (p_names IS NULL OR r.workflow_name = ANY(p_names))
              AND (CASE WHEN r.state = 'waiting' THEN r.wake_epoch <= p_now
                   ELSE coalesce(r.wake_epoch, 0) <= p_now END)
              AND NOT (r.run_id = ANY(v_taken))
            ORDER BY coalesce(r.wake_epoch, 0), r.created_epoch
            LIMIT 1
            FOR UPDATE OF r SKIP LOCKED;
            EXIT WHEN NOT FOUND;
            SELECT c.fence INTO v_fence FROM {s}.claim_run(v_run, p_owner, p_lease) c;
            IF v_fence IS NOT NULL THEN
                RETURN QUERY SELECT 'run'::text, v_run, ''::text, v_fence,
                    v_now + p_lease, NULL::float8;
                RETURN;
            END IF;
            v_taken := v_taken || v_run;  -- a caller's claim() won the lease
        END LOOP;
    END IF;

    RETURN QUERY SELECT 'none'::text, NULL::text, NULL::text, NULL::bigint,
        NULL::float8, least(
            (SELECT min(r.wake_epoch) FROM {s}.runs r WHERE r.state = 'waiting'),
            (SELECT min(c.wake_epoch) FROM {s}.units c WHERE c.state = 'waiting'),
            (SELECT min(l.expires_epoch) FROM {s}.leases l WHERE l.owner IS NOT NULL)
                - v_now + p_now,
            (SELECT min(c.expires_epoch) FROM {s}.units c WHERE c.state = 'claimed')
                - v_now + p_now
        );
END $$;
"""

# (version, statements): never edit a released migration; add a new one.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = ((1, (TABLES, FUNCTIONS)),)
SCHEMA_VERSION = MIGRATIONS[-1][0]
