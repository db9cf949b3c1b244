using System.Buffers;
using System.Text;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Messages;
using Portcullis.Appliance.Notifications;
using Portcullis.Appliance.Policy;
using Portcullis.Appliance.Scanning;
using Portcullis.NativeScan;
using Portcullis.SmtpCore;
using Xunit;

namespace Portcullis.Appliance.Tests.Scanning;

// A message's scan job on the real scanner pool (one thread, no queue, a real engine retained
// for the job), with the job's scans gated by the test: strip's part scans and rescan hold the
// pool thread (the next job waits), go through the job's content scanner, and end at the job's one deadline.
public sealed class ScanJobTests : IDisposable
{
    private const string Message =
        "From: alice@example.org\r\nSubject: invoice\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
        "--b1\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n" +
        "--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"evil.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
        "TVqQAAMAAAAEAAAA\r\n--b1--\r\n";

    private readonly string _folder = Directory.CreateTempSubdirectory("portcullis-scanjob-").FullName;
    private readonly EngineHolder _engines;
    private readonly ScannerPool _pool;
    private readonly GatedScans _scans = new();

    public ScanJobTests()
    {
        var signatures = Directory.CreateDirectory(Path.Combine(_folder, "sigs")).FullName;
        // An .ndb body signature for a string no test message holds: the engine is real, its verdicts come from the gate.
        File.WriteAllText(Path.Combine(signatures, "test.ndb"), $"Portcullis.Test.Never:0:*:{Convert.ToHexStringLower("portcullis-never-present"u8)}\n");
        _engines = new EngineHolder(ScanEngine.Load(new EngineOptions(signatures)));
        _pool = new ScannerPool(_engines, threadCount: 1, queueCapacity: 0);
    }

    public void Dispose()
    {
        _scans.ReleaseAll();
        _pool.Dispose();
        _engines.Dispose();
        Directory.Delete(_folder, recursive: true);
    }

    [Fact]
    public async Task Strip_rescans_the_rewritten_message_through_the_jobs_scanner()
    {
        var scanner = new PooledScanner(_engines, _pool, "test", _scans.For);
        using var buffer = Buffer(Message);
        _scans.Release(GatedScans.PartGate);
        _scans.Release(GatedScans.RescanGate);

        Assert.True(scanner.TryStart(StripJob(buffer), TimeSpan.FromMinutes(5), out var running));
        var result = await running.Verdict.WaitAsync(TimeSpan.FromSeconds(30));
        await running.Finished.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(ScanOutcome.Infected, result.Outcome);
        Assert.NotNull(result.Stripped);
        Assert.Equal(1, _scans.Rescans);
        Assert.True(_scans.EngineGiven, "the job was given the pool's retained engine");
        var delivered = Encoding.ASCII.GetString(ReadAll(result.Stripped!));
        Assert.Equal(delivered, _scans.RescannedText);
        Assert.DoesNotContain("TVqQAAMAAAAEAAAA", delivered);
        Assert.Contains("X-Portcullis-Stripped: Test.Virus", delivered);
    }

    [Fact]
    public async Task Strip_work_counts_against_the_pool_limit()
    {
        var scanner = new PooledScanner(_engines, _pool, "test", _scans.For);
        using var first = Buffer(Message);
        using var second = Buffer(Message);

        Assert.True(scanner.TryStart(StripJob(first), TimeSpan.FromMinutes(5), out var running));
        await _scans.PartEntered.WaitAsync(TimeSpan.FromSeconds(30));

        // The only scanner thread is busy finding the parts to strip: the next job waits its turn.
        Assert.True(scanner.TryStart(StripJob(second), TimeSpan.FromMinutes(5), out var next));
        Assert.Equal(1, _pool.Busy);
        Assert.Equal(1, _pool.QueueDepth);
        Assert.Equal(1, _scans.MessageScans);

        _scans.Release(GatedScans.PartGate);
        _scans.Release(GatedScans.RescanGate);
        var result = await running.Verdict.WaitAsync(TimeSpan.FromSeconds(30));
        await running.Finished.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.NotNull(result.Stripped);
        Assert.NotNull((await next.Verdict.WaitAsync(TimeSpan.FromSeconds(30))).Stripped);
        await next.Finished.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(2, _scans.MessageScans);
    }

    [Fact]
    public async Task A_deadline_during_the_part_scans_is_a_timeout_and_the_content_stays_held()
    {
        var scanner = new PooledScanner(_engines, _pool, "test", _scans.For);
        using var buffer = Buffer(Message);

        Assert.True(scanner.TryStart(StripJob(buffer), TimeSpan.FromMilliseconds(200), out var running));
        await _scans.PartEntered.WaitAsync(TimeSpan.FromSeconds(30));
        var result = await running.Verdict.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(ScanOutcome.Error, result.Outcome);
        Assert.True(result.Scan.IsTimeout);
        Assert.Null(result.Stripped);
        // The job is still inside a part scan: the buffer must not be freed yet.
        Assert.False(running.Finished.IsCompleted);

        _scans.Release(GatedScans.PartGate);
        _scans.Release(GatedScans.RescanGate);
        await running.Finished.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, _scans.Rescans); // past the deadline the job stops before rewriting
    }

    [Fact]
    public async Task A_deadline_during_the_rescan_is_a_timeout_never_the_stripped_message()
    {
        var scanner = new PooledScanner(_engines, _pool, "test", _scans.For);
        using var buffer = Buffer(Message);
        _scans.Release(GatedScans.PartGate);

        Assert.True(scanner.TryStart(StripJob(buffer), TimeSpan.FromMilliseconds(200), out var running));
        await _scans.RescanEntered.WaitAsync(TimeSpan.FromSeconds(30));
        var result = await running.Verdict.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.True(result.Scan.IsTimeout);
        Assert.Null(result.Stripped);
        Assert.False(running.Finished.IsCompleted);
        _scans.Release(GatedScans.RescanGate);
        await running.Finished.WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task After_a_reload_the_next_message_is_scanned_with_the_new_signatures()
    {
        var scanner = new PooledScanner(_engines, _pool, "test");
        using var buffer = Buffer("From: alice@example.org\r\nSubject: invoice\r\n\r\nsee attachment\r\n");
        Assert.True(scanner.TryStart(StripJob(buffer), TimeSpan.FromMinutes(5), out var before));
        Assert.Equal(ScanOutcome.Clean, (await before.Verdict.WaitAsync(TimeSpan.FromSeconds(30))).Outcome);
        await before.Finished.WaitAsync(TimeSpan.FromSeconds(30));

        var signatures = Directory.CreateDirectory(Path.Combine(_folder, "reloaded")).FullName;
        File.WriteAllText(Path.Combine(signatures, "test.ndb"), $"Portcullis.Test.Invoice:0:*:{Convert.ToHexStringLower("see attachment"u8)}\n");
        _engines.Swap(ScanEngine.Load(new EngineOptions(signatures)));

        Assert.True(scanner.TryStart(StripJob(buffer), TimeSpan.FromMinutes(5), out var after));
        var result = await after.Verdict.WaitAsync(TimeSpan.FromSeconds(30));
        await after.Finished.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(ScanOutcome.Infected, result.Outcome);
        Assert.StartsWith("Portcullis.Test.Invoice", result.Detection, StringComparison.Ordinal);
    }

    private MessageBuffer Buffer(string text)
    {
        var buffer = new MessageBuffer(long.MaxValue, _folder);
        buffer.Write(Encoding.ASCII.GetBytes(text));
        return buffer;
    }

    private static MessageScanJob StripJob(MessageBuffer buffer)
    {
        var config = ConfigLoader.LoadFromString("[scan]\naction = strip\n", "test.ini");
        var templates = TemplateSet.Load(Path.Combine(Path.GetTempPath(), "portcullis-no-templates-here"));
        var facts = new Interception { Sender = "alice@example.org", Hostname = "mx.test", Date = DateTimeOffset.UnixEpoch };
        return new MessageScanJob(buffer, ScanJobPolicy.For(config, BannedAttachments.From(config.Scan), templates.Attachment, facts));
    }

    private static byte[] ReadAll(IMessageContent content)
    {
        var bytes = new byte[content.Length];
        var at = 0;
        while (at < bytes.Length) at += content.Read(at, bytes.AsSpan(at));
        return bytes;
    }

    // The whole message is infected; the attachment part is infected; the rewritten message is
    // clean. Part scans and the rescan wait for the test to open their gate.
    private sealed class GatedScans
    {
        public const int PartGate = 0;
        public const int RescanGate = 1;

        private readonly ManualResetEventSlim[] _gates = [new(), new()];
        private readonly TaskCompletionSource _partEntered = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _rescanEntered = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _rescans;
        private int _messageScans;

        public Task PartEntered => _partEntered.Task;
        public Task RescanEntered => _rescanEntered.Task;
        public int Rescans => Volatile.Read(ref _rescans);
        public int MessageScans => Volatile.Read(ref _messageScans);
        public string? RescannedText { get; private set; }
        public bool EngineGiven { get; private set; }

        public void Release(int gate) => _gates[gate].Set();

        public void ReleaseAll()
        {
            foreach (var gate in _gates) gate.Set();
        }

        public IContentScanner For(ScanEngine engine)
        {
            EngineGiven = engine.SignatureCount > 0;
            return new Scans(this);
        }

        private sealed class Scans(GatedScans owner) : IContentScanner
        {
            public ScanResult Scan(IMessageContent content, ScanInspector? inspector = null)
            {
                if (content is MessageBuffer)
                {
                    Interlocked.Increment(ref owner._messageScans);
                    return ScanResult.Infected("Test.Virus");
                }

                owner.RescannedText = Encoding.ASCII.GetString(ReadAll(content));
                Interlocked.Increment(ref owner._rescans);
                owner._rescanEntered.TrySetResult();
                owner._gates[RescanGate].Wait();
                return ScanResult.Clean;
            }

            public ScanResult ScanPart(ReadOnlyMemory<byte> part)
            {
                owner._partEntered.TrySetResult();
                owner._gates[PartGate].Wait();
                return part.Span.StartsWith("MZ"u8) ? ScanResult.Infected("Test.Virus") : ScanResult.Clean;
            }
        }
    }
}
