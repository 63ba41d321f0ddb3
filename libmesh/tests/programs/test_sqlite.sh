#!/usr/bin/env bash
# sqlite3 on libmesh: a table of 200,000 rows, an index, aggregates.
. "$(dirname "$0")/lib.sh"
cat >"$scratch/t.sql" <<'SQL'
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000)
INSERT INTO t SELECT x, printf('name-%d-%s', x, substr('abcdefghijklmnopqrstuvwxyz', 1 + x % 26)), x * 0.5 FROM c;
CREATE INDEX t_name ON t(name);
SELECT count(*), sum(v), max(length(name)) FROM t;
SELECT count(*) FROM t WHERE name LIKE 'name-1%';
DELETE FROM t WHERE id % 3 = 0;
VACUUM;
SELECT count(*), sum(id) FROM t;
SQL
sqlite3 "$scratch/want.db" <"$scratch/t.sql" >"$scratch/want"
MALLOCSTATS=1 LD_PRELOAD=$LIBMESH sqlite3 "$scratch/got.db" <"$scratch/t.sql" >"$scratch/got" 2>"$scratch/err"
ran_on_mesh "$scratch/err"
cat "$scratch/got"
diff "$scratch/want" "$scratch/got" || fail "output differs from glibc's"
