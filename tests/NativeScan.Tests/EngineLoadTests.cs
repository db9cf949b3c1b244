using System.IO.Compression;
using System.Text;

namespace Portcullis.NativeScan.Tests;

// Building engines: bad folders fail with a ClamAVException that says what is wrong, and the
// options really reach libclamav (limits, scan time).
public sealed class EngineLoadTests : IDisposable
{
    private readonly List<string> folders = [];

    [Fact]
    public void Missing_folder_is_a_clear_error()
    {
        var missing = Path.Combine(Path.GetTempPath(), $"portcullis-missing-{Guid.NewGuid():N}");

        var error = Assert.Throws<ClamAVException>(() => ScanEngine.Load(new EngineOptions(missing)));

        Assert.Contains(missing, error.Message);
        Assert.Contains("does not exist", error.Message);
    }

    [Fact]
    public void Empty_folder_is_a_clear_error()
    {
        var empty = NewFolder();

        var error = Assert.Throws<ClamAVException>(() => ScanEngine.Load(new EngineOptions(empty)));

        Assert.Contains(empty, error.Message);
        Output(error);
    }

    [Fact]
    public void Folder_without_signature_lines_is_an_error()
    {
        var folder = NewFolder();
        File.WriteAllText(Path.Combine(folder, "empty.ndb"), "");

        var error = Assert.Throws<ClamAVException>(() => ScanEngine.Load(new EngineOptions(folder)));

        Assert.Contains(folder, error.Message);
        Output(error);
    }

    [Fact]
    public void Corrupt_signature_file_is_a_clear_error()
    {
        var folder = NewFolder();
        File.WriteAllText(Path.Combine(folder, "broken.ndb"), "Broken.Signature:0:*:not-hex-at-all\n");

        var error = Assert.Throws<ClamAVException>(() => ScanEngine.Load(new EngineOptions(folder)));

        Assert.Equal(4, error.ErrorCode); // CL_EMALFDB
        Assert.Contains("Malformed database", error.Message);
        Assert.Contains(folder, error.Message);
        Output(error);
    }

    [Fact]
    public void Options_are_validated_before_libclamav_sees_them()
    {
        var folder = SignatureFixture.WriteFolder();
        folders.Add(folder);

        Assert.Throws<ArgumentOutOfRangeException>(() => ScanEngine.Load(new EngineOptions(folder) { MaxFileSize = -1 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => ScanEngine.Load(new EngineOptions(folder) { ScanTimeout = TimeSpan.FromDays(60) }));
    }

    [Fact]
    public void Engine_keeps_the_options_it_was_built_with()
    {
        var folder = SignatureFixture.WriteFolder();
        folders.Add(folder);
        var options = new EngineOptions(folder) { MaxFiles = 50, MaxRecursion = 5, ScanTimeout = TimeSpan.FromSeconds(30) };

        using var engine = ScanEngine.Load(options);

        Assert.Equal(options, engine.Options);
    }

    [Fact]
    public void Exceeding_max_file_size_alerts_when_asked()
    {
        var folder = SignatureFixture.WriteFolder();
        folders.Add(folder);
        var content = Encoding.ASCII.GetBytes(new string('a', 10_000));

        using (var alerting = ScanEngine.Load(new EngineOptions(folder) { MaxFileSize = 1000, MaxScanSize = 1000, AlertExceedsMax = true }))
        {
            var result = alerting.Scan(content);
            Assert.Equal(ScanOutcome.Infected, result.Outcome);
            Assert.StartsWith("Heuristics.Limits.Exceeded", result.VirusName);
        }

        using (var quiet = ScanEngine.Load(new EngineOptions(folder) { MaxFileSize = 1000, MaxScanSize = 1000, AlertExceedsMax = false }))
        {
            var result = quiet.Scan(content);
            Assert.Equal(ScanOutcome.Clean, result.Outcome);
            Assert.StartsWith("Heuristics.Limits.Exceeded", result.SkippedLimit);
        }
    }

    [Fact]
    public void Scan_time_limit_stops_a_slow_scan()
    {
        var folder = SignatureFixture.WriteFolder();
        folders.Add(folder);
        using var engine = ScanEngine.Load(new EngineOptions(folder) { ScanTimeout = TimeSpan.FromMilliseconds(1) });
        var message = Messages.Bytes(Messages.WithAttachment(new byte[300_000], "zeros.bin"));

        // Slow storage, not synchronisation: every read takes longer than the whole scan may.
        var result = engine.Scan(new SlowSource(message, TimeSpan.FromMilliseconds(20)));

        Assert.Equal(ScanOutcome.Error, result.Outcome);
        Assert.True(result.IsTimeout);
        Assert.Contains("scan time limit", result.ErrorText);
    }

    [Fact]
    public void Limit_alerts_inside_archives_follow_AlertExceedsMax()
    {
        var folder = SignatureFixture.WriteFolder();
        folders.Add(folder);
        var clamExe = File.ReadAllBytes(SignatureFixture.ClamExePath);
        var notes = Enumerable.Range(0, 6).Select(i => ($"note{i}.txt", Encoding.ASCII.GetBytes($"note {i}"))).ToArray();
        // Scanned as bare archives: inside a message the MIME parts count towards MaxFiles too.
        var virusFirst = Zip([("clam.exe", clamExe), .. notes]);
        var tooMany = Zip(notes);

        using (var alerting = ScanEngine.Load(new EngineOptions(folder) { MaxFiles = 3, AlertExceedsMax = true }))
        {
            // A signature matched before the limit is reached decides; the limit alert does not mask it.
            ScanEngineTests.AssertInfected(SignatureFixture.ClamExeSignature, alerting.Scan(virusFirst));
            Assert.Equal(ScanResult.Infected("Heuristics.Limits.Exceeded.MaxFiles"), alerting.Scan(tooMany));
        }

        using (var quiet = ScanEngine.Load(new EngineOptions(folder) { MaxFiles = 3, AlertExceedsMax = false }))
        {
            ScanEngineTests.AssertInfected(SignatureFixture.ClamExeSignature, quiet.Scan(virusFirst));
            Assert.Equal(ScanResult.Clean with { SkippedLimit = "Heuristics.Limits.Exceeded.MaxFiles" }, quiet.Scan(tooMany));
        }
    }

    private static byte[] Zip(params (string Name, byte[] Content)[] entries)
    {
        using var buffer = new MemoryStream();
        using (var zip = new ZipArchive(buffer, ZipArchiveMode.Create, leaveOpen: true))
        {
            foreach (var (name, content) in entries)
            {
                using var entry = zip.CreateEntry(name, CompressionLevel.Optimal).Open();
                entry.Write(content);
            }
        }

        return buffer.ToArray();
    }

    public void Dispose()
    {
        foreach (var folder in folders)
        {
            SignatureFixture.DeleteFolder(folder);
        }
    }

    private static void Output(object value) => Console.WriteLine(value);

    private string NewFolder()
    {
        var folder = Directory.CreateTempSubdirectory("portcullis-load-").FullName;
        folders.Add(folder);
        return folder;
    }

    private sealed class SlowSource(byte[] content, TimeSpan perRead) : IScanSource
    {
        public long Length => content.Length;

        public int Read(long offset, Span<byte> destination)
        {
            Thread.Sleep(perRead);
            var count = (int)Math.Min(destination.Length, content.Length - offset);
            content.AsSpan((int)offset, count).CopyTo(destination);
            return count;
        }
    }
}
