// Micro-benchmarks for the hot paths, with allocated bytes: `make bench-micro`.
// Figures are compared as ratios within one run; never asserted as times.
using BenchmarkDotNet.Running;

if (args is ["downstream-cpu", ..])
{
    Portcullis.Benchmarks.DownstreamBenchmarks.MeasureCpu(args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 20_000);
    return;
}
BenchmarkSwitcher.FromAssembly(typeof(Portcullis.Benchmarks.CommandParserBenchmarks).Assembly).Run(args);
