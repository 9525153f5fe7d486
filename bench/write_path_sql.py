#!/usr/bin/env python3
"""The SQL a `credits/use` runs under the SQLite writer, alone, for trying
schema changes before writing a migration (BENCHMARKS.md, "Fewer B-trees
per effect").

    bench/write_path_sql.py VARIANT USES

applies migrations/sqlite/*.sql to a fresh file, then VARIANT's extra SQL,
seeds 10,000 funded accounts and runs USES uses in groups of 25, each in its
savepoint as the writer runs them: the idempotency lookup, the guarded
debit, the use row, the ledger transaction and its two postings, the
history row, the outbox event and the idempotency row. Python's sqlite3
module (the system SQLite, not the bundled one) runs the statements, so
count instructions, not time, and compare variants by the difference
between two sizes (set-up and seeding cancel out):

    for n in 2000 6000; do
      valgrind --tool=callgrind --callgrind-out-file=cg.$n \\
        "$(python3 -c 'import sys; print(sys.executable)')" bench/write_path_sql.py current $n
    done   # (Collected at 6000 - at 2000) / 4000 = instructions per use

Variants are cumulative schema changes (see VARIANTS); `current` is the
migrations as they are.
"""
import os
import random
import sqlite3
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Each variant's SQL runs after the migrations (foreign keys off around it,
# as a rebuild of a parent table needs).
_WITHOUT_AUTOINCREMENT = """
CREATE TABLE lt2 (seq INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, transaction_id TEXT NOT NULL,
  kind TEXT NOT NULL, customer_id TEXT, request_id TEXT, created_at BIGINT NOT NULL,
  CONSTRAINT ledger_transactions_id_key UNIQUE (tenant_id, transaction_id));
INSERT INTO lt2 SELECT * FROM ledger_transactions;
DROP TABLE ledger_transactions; ALTER TABLE lt2 RENAME TO ledger_transactions;
CREATE INDEX ledger_transactions_customer_idx ON ledger_transactions (tenant_id, customer_id, seq);
"""
_POSTINGS_WITHOUT_ROWID = """
CREATE TABLE lp2 (tenant_id TEXT NOT NULL, transaction_id TEXT NOT NULL, line SMALLINT NOT NULL,
  account TEXT NOT NULL, unit TEXT NOT NULL, amount BIGINT NOT NULL,
  CONSTRAINT ledger_postings_pkey PRIMARY KEY (tenant_id, transaction_id, line),
  CONSTRAINT ledger_postings_transaction_fkey FOREIGN KEY (tenant_id, transaction_id)
    REFERENCES ledger_transactions (tenant_id, transaction_id) DEFERRABLE INITIALLY DEFERRED,
  CONSTRAINT ledger_postings_amount_check CHECK (amount <> 0)) WITHOUT ROWID;
INSERT INTO lp2 SELECT * FROM ledger_postings;
DROP TABLE ledger_postings; ALTER TABLE lp2 RENAME TO ledger_postings;
"""
_IDEMPOTENCY_WITHOUT_ROWID = """
CREATE TABLE ik2 (tenant_id TEXT NOT NULL, idem_key TEXT NOT NULL, fingerprint TEXT NOT NULL,
  response_status INTEGER, response_body BLOB, created_at BIGINT NOT NULL,
  CONSTRAINT idempotency_keys_pkey PRIMARY KEY (tenant_id, idem_key)) WITHOUT ROWID;
INSERT INTO ik2 SELECT tenant_id, idem_key, fingerprint, response_status, response_body, created_at
  FROM idempotency_keys;
DROP TABLE idempotency_keys; ALTER TABLE ik2 RENAME TO idempotency_keys;
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (tenant_id, created_at);
"""
VARIANTS = {
    "current": "",
    "no-autoincrement": _WITHOUT_AUTOINCREMENT,
    "postings-without-rowid": _WITHOUT_AUTOINCREMENT + _POSTINGS_WITHOUT_ROWID,
    "idempotency-without-rowid": _WITHOUT_AUTOINCREMENT
    + _POSTINGS_WITHOUT_ROWID
    + _IDEMPOTENCY_WITHOUT_ROWID,
}
CUSTOMERS = 10_000
GROUP = 25
NOW = 1_795_000_000_000


def main() -> None:
    variant, uses = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory() as work:
        db = sqlite3.connect(os.path.join(work, "lab.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = OFF")
        for migration in sorted((REPO / "migrations" / "sqlite").glob("*.sql")):
            db.executescript(migration.read_text())
        db.executescript(
            "PRAGMA foreign_keys = OFF; BEGIN;" + VARIANTS[variant] + "COMMIT;"
        )
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("BEGIN")
        for c in range(CUSTOMERS):
            db.execute(
                "INSERT INTO customers VALUES ('acme', ?, '{\"tier\":\"pro\"}', 1, 0, 0)",
                (f"c_{c}",),
            )
            db.execute(
                "INSERT INTO credit_accounts (tenant_id, customer_id, balance, updated_at) "
                "VALUES ('acme', ?, 100000000, 0)",
                (f"c_{c}",),
            )
        db.execute("COMMIT")
        run(db, uses)


def run(db: sqlite3.Connection, uses: int) -> None:
    rnd = random.Random(7)
    for i in range(uses):
        if i % GROUP == 0:
            db.execute("BEGIN IMMEDIATE")
        db.execute("SAVEPOINT member")
        key = "%032x" % rnd.getrandbits(128)
        customer = "c_%d" % rnd.randrange(CUSTOMERS)
        # Time-ordered ids, as uuid v7 makes them.
        use_id = "use_%016x%016x" % (NOW * 1000 + i, rnd.getrandbits(64))
        db.execute(
            "SELECT fingerprint, response_status, response_body FROM idempotency_keys "
            "WHERE tenant_id = ?1 AND idem_key = ?2",
            ("acme", key),
        ).fetchall()
        db.execute(
            "UPDATE credit_accounts SET balance = balance - ?3, "
            "spent_today = CASE WHEN spent_day = ?4 THEN spent_today + ?3 ELSE ?3 END, "
            "spent_day = ?4, version = version + 1, updated_at = ?5 "
            "WHERE tenant_id = ?1 AND customer_id = ?2 AND balance - reserved >= ?3 "
            "AND (spent_day <> ?4 OR spent_today <= ?6 - ?3) "
            "RETURNING balance, reserved, spent_today, version, expiring",
            ("acme", customer, 40, NOW // 86_400_000, NOW, 10**12),
        ).fetchall()
        db.execute(
            "INSERT INTO credit_uses (tenant_id, use_id, customer_id, kind, feature, units, "
            "charged, metadata, quote, policy, policy_hash, balance_after, created_at) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            ("acme", use_id, customer, "use", "api_call", 4, 40, "{}",
             '{"lines":[{"description":"api_call x4","amount":40}],"total":40}',
             "credit-pricing", "sha256:%064x" % 5, 99_999_960, NOW),
        )
        db.execute(
            "INSERT INTO ledger_transactions "
            "(tenant_id, transaction_id, kind, customer_id, request_id, created_at) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            ("acme", use_id, "credit.use", customer, "req_%032x" % rnd.getrandbits(128), NOW),
        )
        for line, account, amount in ((1, f"customer:{customer}:credits", 40),
                                      (2, "revenue:credits", -40)):
            db.execute(
                "INSERT INTO ledger_postings (tenant_id, transaction_id, line, account, unit, "
                "amount) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                ("acme", use_id, line, account, "CREDITS", amount),
            )
        db.execute(
            "INSERT INTO state_history (tenant_id, entity_type, entity_id, from_state, "
            "to_state, event, reason, actor, request_id, transaction_id, at) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            ("acme", "credit_account", customer, "balance=100000000 reserved=0",
             "balance=99999960 reserved=0", "use", "feature api_call", "key:acme", "req",
             use_id, NOW),
        )
        db.execute(
            "INSERT INTO outbox_events (tenant_id, event_id, type, source, subject, time, "
            "data, transaction_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            ("acme", "evt_%016x%016x" % (NOW * 1000 + i, rnd.getrandbits(64)),
             "credit.deducted", "/fluxpay/tenants/acme", customer, NOW,
             '{"customerId":"%s","feature":"api_call","units":4,"creditsCharged":40,'
             '"balance":99999960,"transactionId":"%s"}' % (customer, use_id), use_id),
        )
        db.execute(
            "INSERT INTO idempotency_keys (tenant_id, idem_key, fingerprint, created_at, "
            "response_status, response_body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            ("acme", key, "%064x" % rnd.getrandbits(256), NOW, 201,
             b'{"isSuccess":true,"code":"OK","message":"ok","result":{"creditsCharged":40}}' * 3),
        )
        db.execute("RELEASE member")
        if i % GROUP == GROUP - 1:
            db.execute("COMMIT")
    if db.in_transaction:
        db.execute("COMMIT")


if __name__ == "__main__":
    main()
