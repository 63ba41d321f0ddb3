#!/usr/bin/env bash
# git on libmesh: init, commits of many files, gc (which forks and runs
# pack-objects with threads), fsck.
. "$(dirname "$0")/lib.sh"
export LD_PRELOAD=$LIBMESH GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.com GIT_COMMITTER_NAME=t \
       GIT_COMMITTER_EMAIL=t@example.com HOME=$scratch
cd "$scratch"
git init -q repo
cd repo
for c in 1 2 3 4 5; do
    for i in $(seq 1 200); do
        printf 'file %s commit %s\n%s\n' "$i" "$c" "$(seq 1 $((i % 50)))" >"f$i.txt"
    done
    git add -A
    git commit -qm "commit $c"
done
git gc -q --aggressive
git fsck --full --strict 2>&1 | tee "$scratch/fsck"
[ "$(git rev-list --count HEAD)" = 5 ] || fail "history"
[ "$(git show HEAD~2:f17.txt | head -1)" = "file 17 commit 3" ] || fail "content"
MALLOCSTATS=1 git log --oneline >/dev/null 2>"$scratch/err"
ran_on_mesh "$scratch/err"
echo ok
