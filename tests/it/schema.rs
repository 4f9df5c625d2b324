//! One schema on two databases: the SQLite and PostgreSQL migrations are separate files
//! (their DDL differs), so this reads both migrated databases back and demands the same
//! tables, columns (type class, nullability, default), primary keys, unique keys, foreign
//! keys and indexes. A migration added to one backend only fails here.

use std::collections::BTreeSet;

use sqlx::Row as _;

use crate::helpers::pg_database;
use crate::helpers::system::Requirements;

/// (table, column, type class, not null, default)
type Column = (String, String, &'static str, bool, Option<String>);

#[derive(Debug, Default, PartialEq, Eq)]
struct Schema {
    columns: BTreeSet<Column>,
    /// (table, columns)
    primary: BTreeSet<(String, String)>,
    unique: BTreeSet<(String, String)>,
    /// (table, columns, referenced table, referenced columns)
    foreign: BTreeSet<(String, String, String, String)>,
    /// (name, table, columns): the indexes the migrations create by name.
    indexes: BTreeSet<(String, String, String)>,
}

fn class(sql_type: &str) -> &'static str {
    match sql_type.to_ascii_lowercase().as_str() {
        "integer" | "bigint" => "integer",
        "text" => "text",
        "blob" | "bytea" => "bytes",
        other => panic!("a column of type {other}: neither schema should use it"),
    }
}

/// `'[]'::text` and `'[]'` are one default.
fn default(d: Option<String>) -> Option<String> {
    d.map(|d| d.trim_end_matches("::text").to_owned())
}

async fn sqlite_schema(url: &str) -> Schema {
    let mut c: sqlx::SqliteConnection = sqlx::Connection::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
         AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let mut s = Schema::default();
    for t in tables {
        let cols = sqlx::query(&format!("PRAGMA table_info({t})"))
            .fetch_all(&mut c)
            .await
            .unwrap();
        let mut pk: Vec<(i64, String)> = Vec::new();
        for col in cols {
            let name: String = col.get("name");
            let pk_pos: i64 = col.get("pk");
            // A primary key column is never null, whatever PRAGMA says of INTEGER PRIMARY KEY.
            let notnull = col.get::<i64, _>("notnull") == 1 || pk_pos > 0;
            let dflt: Option<String> = col.get("dflt_value");
            s.columns.insert((
                t.clone(),
                name.clone(),
                class(col.get("type")),
                notnull,
                default(dflt),
            ));
            if pk_pos > 0 {
                pk.push((pk_pos, name));
            }
        }
        pk.sort();
        s.primary.insert((
            t.clone(),
            pk.into_iter().map(|p| p.1).collect::<Vec<_>>().join(","),
        ));
        for idx in sqlx::query(&format!("PRAGMA index_list({t})"))
            .fetch_all(&mut c)
            .await
            .unwrap()
        {
            let name: String = idx.get("name");
            let origin: String = idx.get("origin");
            let cols: Vec<String> = sqlx::query(&format!("PRAGMA index_info({name})"))
                .fetch_all(&mut c)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get("name"))
                .collect();
            match origin.as_str() {
                "u" => {
                    s.unique.insert((t.clone(), cols.join(",")));
                }
                "c" => {
                    s.indexes.insert((name, t.clone(), cols.join(",")));
                }
                _ => {} // the primary key's own index (a composite key): compared above
            }
        }
        let mut fks: std::collections::BTreeMap<i64, (String, Vec<String>, Vec<String>)> = Default::default();
        for fk in sqlx::query(&format!("PRAGMA foreign_key_list({t})"))
            .fetch_all(&mut c)
            .await
            .unwrap()
        {
            let e = fks
                .entry(fk.get("id"))
                .or_insert_with(|| (fk.get("table"), Vec::new(), Vec::new()));
            e.1.push(fk.get("from"));
            e.2.push(fk.get("to"));
        }
        for (_, (to, from, cols)) in fks {
            s.foreign.insert((t.clone(), from.join(","), to, cols.join(",")));
        }
    }
    s
}

async fn postgres_schema(url: &str) -> Schema {
    let mut c: sqlx::PgConnection = sqlx::Connection::connect(url).await.unwrap();
    let mut s = Schema::default();
    let cols = sqlx::query(
        "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS ty,
                is_nullable = 'NO' AS notnull, column_default::text AS d
         FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    for col in cols {
        s.columns.insert((
            col.get("t"),
            col.get("c"),
            class(col.get("ty")),
            col.get("notnull"),
            default(col.get("d")),
        ));
    }
    // Constraints with their columns in key order.
    let cons = sqlx::query(
        "SELECT con.contype::text AS kind, rel.relname::text AS t,
                (SELECT string_agg(a.attname, ',' ORDER BY k.i) FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
                   JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n) AS cols,
                ref.relname::text AS rt,
                (SELECT string_agg(a.attname, ',' ORDER BY k.i) FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
                   JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n) AS rcols
         FROM pg_constraint con
         JOIN pg_class rel ON rel.oid = con.conrelid
         JOIN pg_namespace ns ON ns.oid = rel.relnamespace AND ns.nspname = 'public'
         LEFT JOIN pg_class ref ON ref.oid = con.confrelid
         WHERE rel.relname <> '_sqlx_migrations' AND con.contype IN ('p', 'u', 'f')",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    for con in cons {
        let kind: String = con.get("kind");
        let t: String = con.get("t");
        let cols: String = con.get("cols");
        match kind.as_str() {
            "p" => s.primary.insert((t, cols)),
            "u" => s.unique.insert((t, cols)),
            _ => s.foreign.insert((t, cols, con.get("rt"), con.get("rcols"))),
        };
    }
    // Indexes not made for a constraint.
    let idx = sqlx::query(
        "SELECT i.relname::text AS name, t.relname::text AS t,
                (SELECT string_agg(a.attname, ',' ORDER BY k.i) FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(n, i)
                   JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n) AS cols
         FROM pg_index x
         JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_class t ON t.oid = x.indrelid
         JOIN pg_namespace ns ON ns.oid = t.relnamespace AND ns.nspname = 'public'
         WHERE t.relname <> '_sqlx_migrations'
           AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = x.indexrelid)",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    for i in idx {
        s.indexes.insert((i.get("name"), i.get("t"), i.get("cols")));
    }
    s
}

#[tokio::test]
async fn the_sqlite_and_postgresql_migrations_make_one_schema() {
    let mut req = Requirements::new();
    req.env(
        "FWDIST_TEST_PG_URL",
        "a PostgreSQL server: tests/services/postgres.sh start",
    );
    if !req.met("the schema comparison") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("schema.sqlite").display());
    let pg = pg_database(std::path::Path::new(""));
    fwdist::db::Db::connect(&sqlite).await.unwrap().close().await;
    fwdist::db::Db::connect(&pg).await.unwrap().close().await;
    let (a, b) = (sqlite_schema(&sqlite).await, postgres_schema(&pg).await);
    assert!(a.columns.len() > 50, "the schema was read: {a:?}");
    assert_eq!(a.columns, b.columns, "columns");
    assert_eq!(a.primary, b.primary, "primary keys");
    assert_eq!(a.unique, b.unique, "unique keys");
    assert_eq!(a.foreign, b.foreign, "foreign keys");
    assert_eq!(a.indexes, b.indexes, "indexes");
    // Both record the same migrations, by version.
    let q = "SELECT version FROM _sqlx_migrations ORDER BY version";
    let mut c: sqlx::SqliteConnection = sqlx::Connection::connect(&sqlite).await.unwrap();
    let lite: Vec<i64> = sqlx::query_scalar(q).fetch_all(&mut c).await.unwrap();
    let mut c: sqlx::PgConnection = sqlx::Connection::connect(&pg).await.unwrap();
    let post: Vec<i64> = sqlx::query_scalar(q).fetch_all(&mut c).await.unwrap();
    assert_eq!(lite.len(), 4);
    assert_eq!(lite, post);
}

/// Nodes starting together migrate one new database at once: every one of them opens it, and
/// each migration is applied once (sqlx holds PostgreSQL's advisory lock around them).
#[tokio::test(flavor = "multi_thread")]
async fn nodes_starting_together_migrate_a_new_postgresql_database_once() {
    let mut req = Requirements::new();
    req.env(
        "FWDIST_TEST_PG_URL",
        "a PostgreSQL server: tests/services/postgres.sh start",
    );
    if !req.met("the concurrent migration test") {
        return;
    }
    let pg = pg_database(std::path::Path::new(""));
    let opens = (0..4).map(|_| {
        let url = pg.clone();
        tokio::spawn(async move { fwdist::db::Db::connect(&url).await.map(|db| db.dialect()) })
    });
    for open in opens {
        let opened = open.await.unwrap();
        assert!(opened.is_ok(), "a node failed to open the database: {opened:?}");
    }
    let mut c: sqlx::PgConnection = sqlx::Connection::connect(&pg).await.unwrap();
    let (applied, distinct): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut c)
            .await
            .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count() as i64;
    assert_eq!((applied, distinct), (files, files), "each migration applied once");
}
