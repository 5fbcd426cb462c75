using System.Globalization;
using Dolly.Storage;
using Dolly.Storage.CrashWorker;

// Usage: dolly-crash-worker <pool-dir> <seed> <ops> <block-size>
// Opens (or creates) the pool, builds the reference model from its content, then runs <ops> seeded steps. After
// each step it prints "D <i> <step>" (done) or "A <i> <step>" (done and acknowledged durable: the state after steps
// 0..i must survive a crash), flushing stdout each time, and "END" at the end. An unexpected engine result prints
// "E <i> <message>" and exits with code 2.
if (args.Length != 4)
{
    Console.Error.WriteLine("usage: Dolly.Storage.CrashWorker <pool-dir> <seed> <ops> <block-size>");
    return 64;
}

string dir = args[0];
int seed = int.Parse(args[1], CultureInfo.InvariantCulture);
int count = int.Parse(args[2], CultureInfo.InvariantCulture);
int blockSize = int.Parse(args[3], CultureInfo.InvariantCulture);
// The raw stream with AutoFlush: every line reaches the pipe before the next step starts.
using var stdout = new StreamWriter(Console.OpenStandardOutput(), new System.Text.UTF8Encoding(false)) { AutoFlush = true };

var opened = Directory.Exists(dir) && File.Exists(Path.Combine(dir, "meta.dolly"))
    ? Pool.Open(dir)
    : Pool.Create(dir, new PoolCreateOptions { BlockSize = blockSize });
if (!opened.IsOk)
{
    stdout.WriteLine($"E -1 {opened.Error}");
    stdout.Flush();
    return 2;
}

var options = WorkloadOptions(blockSize);
using var executor = new OpExecutor(dir, null, opened.Value);
var workload = new Workload(seed, ReferenceModel.FromPool(executor.Pool), options);
stdout.WriteLine("READY");
stdout.Flush();
for (int i = 0; i < count; i++)
{
    var op = workload.Next();
    var error = executor.Execute(op);
    if (error?.Code != op.ExpectedError)
    {
        stdout.WriteLine($"E {i} {op}: got {error?.Code.ToString() ?? "ok"} ({error?.Message})");
        stdout.Flush();
        return 2;
    }

    stdout.WriteLine(op.Commits ? $"A {i} {op}" : $"D {i} {op}");
    stdout.Flush();
}

stdout.WriteLine("END");
stdout.Flush();
return 0;

static WorkloadOptions WorkloadOptions(int blockSize) => new()
{
    BlockSize = blockSize,
    MaxVolumeBytes = 256 * 1024,
    MaxDevices = 8,
    Abandon = false,
    Reopen = true,
    Check = false,
};
