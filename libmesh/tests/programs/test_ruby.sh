#!/usr/bin/env bash
# Ruby on libmesh: strings, hashes, threads, full GCs, a fork.
. "$(dirname "$0")/lib.sh"
cat >"$scratch/t.rb" <<'RB'
h = {}
200_000.times { |i| h["key#{i}"] = "v" * (i % 200) }
threads = 4.times.map do |t|
  Thread.new { a = []; 50_000.times { |i| a << ("s#{t}" * (i % 50)) }; a.map(&:size).sum }
end
sums = threads.map(&:value)
GC.start(full_mark: true, immediate_sweep: true)
kept = h.select { |k, _| k.end_with?("7") }.size
rd, wr = IO.pipe
pid = fork { rd.close; wr.write(h["key4242"].size.to_s); wr.close; exit!(0) }
wr.close
child = rd.read
Process.wait(pid)
puts [h.size, sums.sum, kept, child, $?.success?].join(" ")
RB
ruby "$scratch/t.rb" >"$scratch/want"
MALLOCSTATS=1 LD_PRELOAD=$LIBMESH ruby "$scratch/t.rb" >"$scratch/got" 2>"$scratch/err"
ran_on_mesh "$scratch/err"
cat "$scratch/got"
diff "$scratch/want" "$scratch/got" || fail "output differs from glibc's"
