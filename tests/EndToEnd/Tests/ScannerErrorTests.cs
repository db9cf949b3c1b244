using System.IO.Compression;
using MimeKit;
using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// A scan that cannot finish in [scan] timeout is a scanner error: on_error = tempfail answers
// 451 4.7.0 and delivers nothing; on_error = pass delivers with X-Virus-Status: Unscanned.
// The slow input is a zip of 20,000 small members: libclamav extracts each one, which takes
// seconds on this kind of machine, far past the 1 s limit.
public sealed class ScannerErrorTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Scan_timeout_with_on_error_tempfail_is_451_4_7_0_and_nothing_is_delivered()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => SlowScan(ini, "tempfail"));
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);

        var reply = await RawTransaction.SendAsync(client, await TestMessages.WireBytesOfAsync(ManyMemberZip()));

        Assert.Equal(451, reply.Code);
        Assert.Equal("4.7.0", reply.EnhancedCode);
        // The gateway lets go of its downstream transaction: RSET, or, as this message was large
        // enough to be forwarded while it arrived, closing the connection with its data unended.
        await await Task.WhenAny(downstream.Rsets.WaitForCountAsync(1, Wait, "the gateway's RSET to the downstream"),
            downstream.ClosedSessions.WaitForCountAsync(1, Wait, "the downstream connection closed"));
        VirusTests.AssertNoEndOfData(downstream);
        var log = await gateway.WaitForLogRecordAsync();
        Assert.Equal("error", log["verdict"]);
        Assert.Equal("tempfail", log["action"]);
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Scan_timeout_with_on_error_pass_delivers_marked_unscanned()
    {
        var message = ManyMemberZip();
        var sent = await TestMessages.WireBytesOfAsync(message);
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => SlowScan(ini, "pass"));
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);

        var reply = await RawTransaction.SendAsync(client, sent);

        Assert.Equal(250, reply.Code);
        var delivered = Assert.Single(await downstream.Messages.WaitForCountAsync(1, Wait, "the delivered message"));
        var added = Delivered.SplitPrepended(delivered.Content, sent);
        Assert.Contains(added, h => h.Name.Equals("X-Virus-Status", StringComparison.OrdinalIgnoreCase) && h.Value.Trim() == "Unscanned");
        var log = await gateway.WaitForLogRecordAsync();
        Assert.Equal("error", log["verdict"]);
        Assert.Equal("passed-unscanned", log["action"]);
        await gateway.StopAsync();
    }

    private static void SlowScan(GatewayIni ini, string onError)
    {
        ini.Set("scan", "timeout", "1s");
        ini.Set("scan", "on_error", onError);
        ini.Set("scan", "max_files", "50000");
    }

    private static MimeMessage ManyMemberZip()
    {
        var zip = new MemoryStream();
        using (var archive = new ZipArchive(zip, ZipArchiveMode.Create, leaveOpen: true))
        {
            for (int i = 0; i < 20_000; i++)
            {
                using var entry = archive.CreateEntry($"part{i}.txt", CompressionLevel.NoCompression).Open();
                entry.Write(System.Text.Encoding.ASCII.GetBytes($"member {i} of a slow archive\n"));
            }
        }
        return TestMessages.WithAttachment("slow archive", "see attachment\r\n", "many.zip", zip.ToArray(), "application/zip");
    }
}
