using System.Diagnostics;
using System.Text;

namespace Portcullis.NativeScan.Tests;

public sealed class ScanEngineTests : IClassFixture<SignatureFixture>
{
    private readonly SignatureFixture fixture;

    public ScanEngineTests(SignatureFixture fixture)
    {
        this.fixture = fixture;
    }

    private ScanEngine Engine => fixture.Engine;

    [Fact]
    public void Engine_reports_its_signatures_and_a_custom_database()
    {
        Assert.Equal(2u, Engine.SignatureCount);
        Assert.Equal("custom", Engine.DatabaseVersion);
        Assert.NotNull(Engine.DatabaseTime);
        Assert.StartsWith("1.4", ClamAV.Version);
    }

    [Fact]
    public void Hdb_line_computed_in_managed_code_matches_sigtool()
    {
        var start = new ProcessStartInfo("sigtool", ["--md5", SignatureFixture.ClamExePath])
        {
            RedirectStandardOutput = true,
            WorkingDirectory = SignatureFixture.TestFiles,
        };
        using var sigtool = Process.Start(start)!;
        var printed = sigtool.StandardOutput.ReadToEnd().Trim();
        sigtool.WaitForExit();

        // sigtool prints the name it was given; compare hash and size, and the file name.
        Assert.Equal(
            SignatureFixture.HdbLine(SignatureFixture.ClamExePath),
            printed.Replace(SignatureFixture.ClamExePath, "clam.exe", StringComparison.Ordinal));
    }

    [Fact]
    public void Clean_bytes_are_clean()
    {
        var message = Messages.Bytes(Messages.Plain("Nothing to see here.\r\nRegards"));

        Assert.Equal(ScanResult.Clean, Engine.Scan(message));
        Assert.Equal(ScanResult.Clean, Engine.Scan(new SegmentedSource(message, 7)));
    }

    [Fact]
    public void Empty_content_is_clean()
    {
        Assert.Equal(ScanResult.Clean, Engine.Scan(ReadOnlySpan<byte>.Empty));
        Assert.Equal(ScanResult.Clean, Engine.Scan(new SegmentedSource([], 7)));
    }

    [Fact]
    public void Eicar_string_is_infected_with_the_ndb_signature()
    {
        var result = Engine.Scan(SignatureFixture.Eicar, "eicar.com");

        AssertInfected(SignatureFixture.EicarSignature, result);
    }

    [Fact]
    public void Eicar_in_a_plain_text_body_is_infected()
    {
        var message = Messages.Bytes(Messages.Plain("before " + Encoding.ASCII.GetString(SignatureFixture.Eicar) + " after"));

        AssertInfected(SignatureFixture.EicarSignature, Engine.Scan(new SegmentedSource(message, 7)));
    }

    [Fact]
    public void Clam_exe_is_infected_with_the_hdb_signature()
    {
        var result = Engine.Scan(File.ReadAllBytes(SignatureFixture.ClamExePath));

        AssertInfected(SignatureFixture.ClamExeSignature, result);
    }

    [Fact]
    public void Clam_zip_is_infected()
    {
        var result = Engine.Scan(File.ReadAllBytes(Path.Combine(SignatureFixture.TestFiles, "clam.zip")));

        AssertInfected(SignatureFixture.ClamExeSignature, result);
    }

    [Fact]
    public void Clam_exe_as_a_base64_attachment_is_infected()
    {
        var message = Messages.Bytes(Messages.WithAttachment(File.ReadAllBytes(SignatureFixture.ClamExePath), "clam.exe"));

        AssertInfected(SignatureFixture.ClamExeSignature, Engine.Scan(new SegmentedSource(message, 4096)));
    }

    [Fact]
    public void Clam_exe_in_a_forwarded_rfc822_message_is_infected()
    {
        var inner = Messages.WithAttachment(File.ReadAllBytes(SignatureFixture.ClamExePath), "clam.exe");
        var message = Messages.Bytes(Messages.WithForwardedMessage(inner));

        AssertInfected(SignatureFixture.ClamExeSignature, Engine.Scan(new SegmentedSource(message, 4096)));
    }

    [Fact]
    public void Debian_clam_mail_test_file_is_infected()
    {
        AssertInfected(SignatureFixture.ClamExeSignature, Engine.ScanFile(Path.Combine(SignatureFixture.TestFiles, "clam.mail")));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(4095)]
    [InlineData(4096)]
    [InlineData(65536)]
    public void Segmented_source_scans_like_the_same_bytes_in_one_span(int segmentSize)
    {
        var inner = Messages.WithAttachment(File.ReadAllBytes(SignatureFixture.ClamExePath), "clam.exe");
        var samples = new[]
        {
            Messages.Bytes(Messages.Plain("clean text")),
            Messages.Bytes(Messages.WithForwardedMessage(inner)),
            Messages.Bytes(Messages.WithAttachment(Encoding.ASCII.GetBytes("just text"), "notes.txt")),
            SignatureFixture.Eicar,
        };

        foreach (var sample in samples)
        {
            var source = new SegmentedSource(sample, segmentSize);

            Assert.Equal(Engine.Scan(sample), Engine.Scan(source));
            Assert.True(source.Reads > 0);
        }
    }

    [Fact]
    public void Scan_file_by_descriptor()
    {
        var path = Path.Combine(fixture.Folder, "..", $"spill-{Guid.NewGuid():N}.eml");
        File.WriteAllBytes(path, Messages.Bytes(Messages.WithAttachment(File.ReadAllBytes(SignatureFixture.ClamExePath), "clam.exe")));
        try
        {
            using var file = File.OpenHandle(path);

            AssertInfected(SignatureFixture.ClamExeSignature, Engine.ScanFile(file, "spill.eml"));
            // libclamav preads the descriptor, so a second scan of the same handle sees the same bytes.
            AssertInfected(SignatureFixture.ClamExeSignature, Engine.ScanFile(file));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Clean_file_by_path()
    {
        Assert.Equal(ScanResult.Clean, Engine.ScanFile(Path.Combine(fixture.Folder, "portcullis-test.hdb")));
    }

    [Fact]
    public void Source_that_throws_gives_an_error_not_clean()
    {
        var result = Engine.Scan(new FailingSource(throws: true));

        Assert.Equal(ScanOutcome.Error, result.Outcome);
        Assert.Equal(12, result.ErrorCode); // CL_EREAD
        Assert.Contains("spill file vanished", result.ErrorText);
    }

    [Fact]
    public void Source_shorter_than_its_length_gives_an_error_not_clean()
    {
        var result = Engine.Scan(new FailingSource(throws: false));

        Assert.Equal(ScanOutcome.Error, result.Outcome);
        Assert.Contains("ended at 0 of 10000 bytes", result.ErrorText);
    }

    [Fact]
    public async Task Concurrent_scans_share_one_engine()
    {
        var clamExe = File.ReadAllBytes(SignatureFixture.ClamExePath);
        var scans = Enumerable.Range(0, 8).Select(i => Task.Run(() =>
            i % 2 == 0 ? Engine.Scan(new SegmentedSource(clamExe, 7)) : Engine.Scan(Messages.Bytes(Messages.Plain("hello")))));

        var results = await Task.WhenAll(scans);

        for (var i = 0; i < results.Length; i++)
        {
            Assert.Equal(i % 2 == 0 ? ScanOutcome.Infected : ScanOutcome.Clean, results[i].Outcome);
        }
    }

    internal static void AssertInfected(string signature, ScanResult result)
    {
        Assert.Equal(ScanOutcome.Infected, result.Outcome);
        // libclamav marks every signature from an unsigned database as unofficial.
        Assert.Equal(signature + ".UNOFFICIAL", result.VirusName);
    }
}
