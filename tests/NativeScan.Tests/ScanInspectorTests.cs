using System.IO.Compression;
using System.Text;
using Xunit;

namespace Portcullis.NativeScan.Tests;

// clcb_file_inspection and clcb_meta through a per-scan ScanInspector: what libclamav reports,
// and how a recorded detection, a signature and a failing inspector make the verdict.
public sealed class ScanInspectorTests(SignatureFixture fixture) : IClassFixture<SignatureFixture>
{
    private static readonly byte[] HarmlessPe = [.. "MZ"u8, .. new byte[62], .. Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("harmless", 20)))];

    // Records what it is told; bans one file name, and with stop, ends the scan there.
    private sealed class Recorder(string? bannedName = null, bool throws = false, bool stop = false) : ScanInspector
    {
        public List<(string? Name, string Type, int Depth, string?[] Ancestors, int Length)> Files { get; } = [];

        public List<ArchiveEntry> Entries { get; } = [];

        // Each file's NameUtf8, decoded: the same name as Name ("" for none).
        public List<string> NamesAsBytes { get; } = [];

        public override string? InspectFile(in EmbeddedFile file)
        {
            if (throws)
            {
                throw new InvalidOperationException("policy broke");
            }

            Files.Add((file.Name, file.Type, file.Depth, [.. file.Ancestors], file.Content.Length));
            NamesAsBytes.Add(Encoding.UTF8.GetString(file.NameUtf8));
            var banned = bannedName is not null && file.Name == bannedName;
            StopScan = banned && stop;
            return banned ? "Banned.Test" : null;
        }

        public override string? InspectArchiveEntry(in ArchiveEntry entry)
        {
            Entries.Add(entry);
            return null;
        }
    }

    private static byte[] Zip(string name, byte[] content)
    {
        using var stream = new MemoryStream();
        using (var zip = new ZipArchive(stream, ZipArchiveMode.Create, leaveOpen: true))
        {
            using var entry = zip.CreateEntry(name).Open();
            entry.Write(content);
        }

        return stream.ToArray();
    }

    private static byte[] Message(byte[] attachment, string fileName) =>
        Encoding.ASCII.GetBytes(Messages.WithAttachment(attachment, fileName));

    [Fact]
    public void Every_unpacked_file_is_reported_with_its_name_type_depth_and_ancestors()
    {
        var inner = Zip("evil.exe", HarmlessPe);
        var message = Message(Zip("inner.zip", inner), "outer.zip");
        var recorder = new Recorder();

        var result = fixture.Engine.Scan(new SegmentedSource(message, 4096), "message", recorder);

        Assert.Equal(ScanOutcome.Clean, result.Outcome);
        var top = recorder.Files[0];
        Assert.Equal((0, message.Length), (top.Depth, top.Length));
        var exe = Assert.Single(recorder.Files, f => f.Name == "evil.exe");
        Assert.Equal("MSEXE", exe.Type);
        Assert.Equal(3, exe.Depth);
        Assert.Equal(new string?[] { "message", "outer.zip", "inner.zip" }, exe.Ancestors);
        Assert.Equal(HarmlessPe.Length, exe.Length);
        Assert.Equal(recorder.Files.Select(f => f.Name ?? ""), recorder.NamesAsBytes);
        Assert.Contains(recorder.Entries, e => e.ContainerType == "ZIP" && e.Name == "evil.exe" && !e.Encrypted && e.Size == HarmlessPe.Length);
        Assert.Contains(recorder.Entries, e => e.ContainerType == "MAIL" && e.Name == "outer.zip");
    }

    [Fact]
    public void A_recorded_detection_is_the_verdict_when_no_signature_matched()
    {
        var message = Message(Zip("evil.exe", HarmlessPe), "a.zip");

        var result = fixture.Engine.Scan(new SegmentedSource(message, 4096), null, new Recorder("evil.exe"));

        Assert.Equal(ScanResult.Infected("Banned.Test"), result);
    }

    [Fact]
    public void A_signature_keeps_its_name_even_inside_the_banned_file()
    {
        var message = Message(Zip("evil.exe", SignatureFixture.Eicar), "a.zip");

        var result = fixture.Engine.Scan(new SegmentedSource(message, 4096), null, new Recorder("evil.exe"));

        Assert.Equal(ScanOutcome.Infected, result.Outcome);
        Assert.StartsWith(SignatureFixture.EicarSignature, result.VirusName);
    }

    [Fact]
    public void A_container_seen_clean_before_is_unpacked_again()
    {
        // The clean cache is off: otherwise the second scan would stop at the cached zip.
        var message = Message(Zip("evil.exe", HarmlessPe), "a.zip");
        Assert.Equal(ScanResult.Clean, fixture.Engine.Scan(new SegmentedSource(message, 4096), null, new Recorder()));

        var again = fixture.Engine.Scan(new SegmentedSource(message, 4096), null, new Recorder("evil.exe"));

        Assert.Equal(ScanResult.Infected("Banned.Test"), again);
    }

    [Fact]
    public void With_the_clean_cache_a_container_seen_once_hides_its_members_from_the_policy()
    {
        // Why ScanEngine keeps the cache off: the callback still sees the message (it runs before the
        // cache lookup), but the zip, cached clean the first time, is not unpacked the second time,
        // even inside a different message, so a banned member is never seen.
        using var cached = ScanEngine.Load(new EngineOptions(fixture.Folder) { CleanCache = true });
        var zip = Zip("evil.exe", HarmlessPe);
        var first = new Recorder();
        Assert.Equal(ScanResult.Clean, cached.Scan(new SegmentedSource(Message(zip, "a.zip"), 4096), null, first));
        Assert.Contains(first.Files, f => f.Name == "evil.exe");

        var second = new Recorder("evil.exe");
        var result = cached.Scan(new SegmentedSource(Message(zip, "b.zip"), 4096), null, second);

        Assert.Equal(ScanResult.Clean, result);
        Assert.Contains(second.Files, f => f.Depth == 0);
        Assert.DoesNotContain(second.Files, f => f.Name == "evil.exe");
    }

    [Fact]
    public void Stopping_the_scan_ends_it_at_that_file_with_the_inspector_detection()
    {
        // EICAR comes after the stopped file: it is never reached, and the callback's name is replaced.
        var message = Encoding.ASCII.GetBytes(Messages.WithAttachment(Zip("evil.exe", HarmlessPe), "a.zip")
            .Replace("--outer-boundary--", "--outer-boundary\r\nContent-Type: text/plain\r\n\r\n" + Encoding.ASCII.GetString(SignatureFixture.Eicar) + "\r\n--outer-boundary--"));
        var recorder = new Recorder("a.zip", stop: true);

        var result = fixture.Engine.Scan(new SegmentedSource(message, 4096), null, recorder);

        Assert.Equal(ScanResult.Infected("Banned.Test"), result);
        Assert.DoesNotContain(recorder.Files, f => f.Name == "evil.exe");
        Assert.StartsWith(SignatureFixture.EicarSignature, fixture.Engine.Scan(new SegmentedSource(message, 4096), null, new Recorder("a.zip")).VirusName);
    }

    [Fact]
    public void An_inspector_that_throws_makes_the_scan_an_error()
    {
        var message = Message(HarmlessPe, "a.bin");

        var result = fixture.Engine.Scan(new SegmentedSource(message, 4096), null, new Recorder(throws: true));

        Assert.Equal(ScanOutcome.Error, result.Outcome);
        Assert.Contains("policy broke", result.ErrorText);
    }

    [Fact]
    public void A_spilled_message_is_inspected_through_its_descriptor()
    {
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(path, Message(Zip("evil.exe", HarmlessPe), "a.zip"));
            using var file = File.OpenHandle(path);

            var result = fixture.Engine.ScanFile(file, null, new Recorder("evil.exe"));

            Assert.Equal(ScanResult.Infected("Banned.Test"), result);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task The_pool_runs_the_job_inspector()
    {
        using var holder = new EngineHolder(ScanEngine.Load(new EngineOptions(fixture.Folder)));
        using var pool = new ScannerPool(holder, 1, 4);
        var message = Message(Zip("evil.exe", HarmlessPe), "a.zip");

        Assert.True(pool.TryEnqueue(new SegmentedSource(message, 512), null, TimeSpan.FromMinutes(1), new Recorder("evil.exe"), out var ticket));

        Assert.Equal(ScanResult.Infected("Banned.Test"), await ticket.Result);
    }

    [Fact]
    public void A_limit_passed_with_alert_exceeds_max_off_is_still_named()
    {
        using var engine = ScanEngine.Load(new EngineOptions(fixture.Folder) { MaxRecursion = 2, AlertExceedsMax = false });
        var message = Message(Zip("a.zip", Zip("b.zip", Zip("evil.exe", HarmlessPe))), "outer.zip");

        var result = engine.Scan(new SegmentedSource(message, 4096), null, new Recorder());

        Assert.Equal(ScanResult.Clean with { SkippedLimit = "Heuristics.Limits.Exceeded.MaxRecursion" }, result);
    }
}
