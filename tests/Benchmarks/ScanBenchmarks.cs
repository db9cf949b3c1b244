using System.Text;
using BenchmarkDotNet.Attributes;
using Portcullis.NativeScan;

namespace Portcullis.Benchmarks;

// Scanning a 5 KB clean message with the test signatures, from one span and from 4 KB
// segments through the fmap pread callback (the gateway's path).
[MemoryDiagnoser]
public class ScanBenchmarks
{
    private ScanEngine _engine = null!;
    private byte[] _message = [];
    private SegmentedSource _source = null!;

    // libclamav's per-scan unpack folder: on the disk (ext4 here) or on tmpfs ([scan] scratch_folder).
    [Params("/tmp", "/dev/shm")]
    public string Scratch { get; set; } = "/tmp";

    [GlobalSetup]
    public void Setup()
    {
        ClamAV.Initialize();
        string folder = Path.Combine(FindRoot(), "build", "test-signatures");
        _engine = ScanEngine.Load(new EngineOptions(folder) { TempFolder = Scratch });
        var sb = new StringBuilder("From: a@example.org\r\nTo: b@example.net\r\nSubject: bench\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n");
        var rnd = new Random(2);
        while (sb.Length < 5 * 1024)
        {
            for (int i = 0; i < 70; i++) sb.Append((char)('a' + rnd.Next(26)));
            sb.Append("\r\n");
        }
        _message = Encoding.ASCII.GetBytes(sb.ToString());
        _source = new SegmentedSource(_message, 4096);
    }

    [GlobalCleanup]
    public void Cleanup() => _engine.Dispose();

    [Benchmark(Baseline = true)]
    public ScanOutcome ScanSpan() => _engine.Scan(_message).Outcome;

    [Benchmark]
    public ScanOutcome ScanSegments() => _engine.Scan(_source).Outcome;

    // BenchmarkDotNet runs a generated copy elsewhere: `make bench-micro` passes the repository in PORTCULLIS_REPO.
    private static string FindRoot()
    {
        if (Environment.GetEnvironmentVariable("PORTCULLIS_REPO") is { Length: > 0 } repo) return repo;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Appliance.sln"))) return dir.FullName;
        return Directory.GetCurrentDirectory();
    }

    private sealed class SegmentedSource(byte[] data, int segment) : IScanSource
    {
        private readonly byte[][] _segments = data.Chunk(segment).ToArray();

        public long Length => data.Length;

        public int Read(long offset, Span<byte> destination)
        {
            int copied = 0;
            while (copied < destination.Length && offset < data.Length)
            {
                var seg = _segments[offset / segment];
                int within = (int)(offset % segment);
                int n = Math.Min(seg.Length - within, destination.Length - copied);
                seg.AsSpan(within, n).CopyTo(destination[copied..]);
                copied += n;
                offset += n;
            }
            return copied;
        }
    }
}
