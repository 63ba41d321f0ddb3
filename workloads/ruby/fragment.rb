# fragment.rb: the Mesh paper's Ruby fragmentation script, written afresh.
#
# Within a budget (128 MiB at scale 1), for n = 512, 1024, 2048, ...:
# allocate strings of n - 16 bytes until the budget is filled, keep every
# fourth, sleep 0.2 s, run a full garbage collection, double n. The
# survivors pin one string in four across every page of every round, and no
# later round can reuse the holes, because its strings are twice as big:
# only an allocator that compacts (meshing) gets the memory back.
#
# It follows the workloads' contract (workloads/README.md) so the harness
# can run it like any workload: --seed, --scale, --trace FILE (JSON lines
# {"t", "live", "phase"}, a last line with phase "end" and the result), and
# the result object as the last line of stdout. Live bytes are the bytes of
# string buffers the script can still reach (n - 16 + 1 per string: Ruby
# adds a terminator), not Ruby's object slots.
#
# Usage: ruby fragment.rb [--seed N] [--scale X] [--budget BYTES]
#                         [--start N] [--sleep S] [--hold S] [--trace FILE]

require "json"

MASK64 = 0xffff_ffff_ffff_ffff

def usage_error(msg)
  warn "fragment.rb: #{msg} (see --help)"
  exit 2
end

def parse_bytes(s)
  m = /\A(\d+)([KMG]?)\z/i.match(s) or usage_error("bad byte count #{s.inspect}")
  m[1].to_i << { "" => 0, "K" => 10, "M" => 20, "G" => 30 }[m[2].upcase]
end

def parse_number(s, name, integer: false)
  v = integer ? Integer(s, 10) : Float(s)
  usage_error("--#{name} must not be negative") if v.negative?
  v
rescue ArgumentError, TypeError
  usage_error("bad value #{s.inspect} for --#{name}")
end

opts = { seed: 1, scale: 1.0, budget: nil, start: 512, sleep: nil, hold: 0.0, trace: nil }
args = ARGV.dup
until args.empty?
  flag = args.shift
  if flag == "--help"
    puts <<~HELP
      fragment.rb: the Mesh paper's Ruby fragmentation script.
      For n = 512, 1024, ...: fill the budget with strings of n - 16 bytes,
      keep every fourth, sleep, run a full GC, double n.
        --seed N       seed of the strings' contents (default 1)
        --scale X      multiplies the budget; sleeps by min(X, 1) (default 1)
        --budget B     bytes of the budget, K/M/G suffixes (default 128M x scale)
        --start N      first n (default 512)
        --sleep S      seconds to sleep before each GC (default 0.2 x min(scale, 1))
        --hold S       seconds to hold the survivors at the end (default 0)
        --trace FILE   JSON lines of live bytes and phases
      phases: round-<string size> per round, hold
    HELP
    exit 0
  end
  value = args.shift or usage_error("#{flag} needs a value")
  case flag
  when "--seed" then opts[:seed] = parse_number(value, "seed", integer: true)
  when "--scale"
    opts[:scale] = parse_number(value, "scale")
    usage_error("--scale must be positive") unless opts[:scale].positive?
  when "--budget" then opts[:budget] = parse_bytes(value)
  when "--start" then opts[:start] = parse_number(value, "start", integer: true)
  when "--sleep" then opts[:sleep] = parse_number(value, "sleep")
  when "--hold" then opts[:hold] = parse_number(value, "hold")
  when "--trace" then opts[:trace] = value
  else usage_error("unknown flag #{flag}")
  end
end
usage_error("--start must be more than 16") if opts[:start] <= 16

scale = opts[:scale]
budget = opts[:budget] || (128 * 2**20 * scale).to_i
sleep_s = opts[:sleep] || 0.2 * [scale, 1.0].min
seed = opts[:seed]

START = Process.clock_gettime(Process::CLOCK_MONOTONIC)
trace = opts[:trace] && File.open(opts[:trace], "w")
live = 0
peak_live = 0

mark = lambda do |phase, extra = {}|
  peak_live = live if live > peak_live
  next unless trace
  t = Process.clock_gettime(Process::CLOCK_MONOTONIC) - START
  trace.write(JSON.generate({ "t" => t.round(6), "live" => live, "phase" => phase }.merge(extra)), "\n")
  trace.flush
end

kept = []
kept_bytes = 0
rounds = 0
allocated = 0
phase = "start"
n = opts[:start]
available = budget
while available >= n
  size = n - 16
  phase = "round-#{size}"
  mark.call(phase)
  count = available / n
  # One character per string, from the seed and the string's index, so
  # that the checksum depends on the seed and on every survivor.
  batch = Array.new(count)
  i = 0
  while i < count
    batch[i] = ((seed * 31 + rounds * 7 + i) % 26 + 65).chr * size
    live += size + 1
    i += 1
    mark.call(phase) if (i & 4095).zero?
  end
  allocated += count * (size + 1)
  peak_live = live if live > peak_live
  survivors = 0
  i = 0
  while i < count
    kept << batch[i]
    survivors += 1
    i += 4
  end
  batch = nil
  kept_bytes += survivors * (size + 1)
  available -= survivors * n
  live = kept_bytes          # what the script can still reach
  mark.call(phase)
  sleep(sleep_s) if sleep_s.positive?
  GC.start(full_mark: true, immediate_sweep: true)
  mark.call(phase)
  rounds += 1
  n *= 2
end

if opts[:hold].positive?
  mark.call("hold")
  sleep(opts[:hold])
end

# FNV-1a over every survivor's length and first byte.
h = 0xcbf2_9ce4_8422_2325
kept.each do |s|
  h = ((h ^ s.bytesize) * 0x100_0000_01b3) & MASK64
  h = ((h ^ s.getbyte(0)) * 0x100_0000_01b3) & MASK64
end

result = {
  "workload" => "ruby-fragment", "seed" => seed, "scale" => scale, "budget" => budget,
  "rounds" => rounds, "kept_objects" => kept.size, "held_bytes" => kept_bytes,
  "allocated_bytes" => allocated, "peak_live" => [peak_live, live].max,
  "final_live" => live, "gc_count" => GC.count, "ruby" => RUBY_VERSION,
  "elapsed_s" => (Process.clock_gettime(Process::CLOCK_MONOTONIC) - START).round(6),
  "checksum" => format("%016x", h)
}
mark.call("end", { "result" => result })
trace&.close
puts JSON.generate(result)
