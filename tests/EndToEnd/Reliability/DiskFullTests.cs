using System.Diagnostics;
using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Reliability;

// temp_folder on a 4 MiB tmpfs that fills up. Mail that must spill past memory_threshold and does
// not fit is refused with 4xx (never 250 without the downstream having it), and the room it took is
// given back so mail that fits in memory keeps flowing. temp_folder is also libclamav's working
// space: while it is full no scan can be trusted (a virus in an archive came back clean), so
// everything is deferred with 4xx. Once there is room again, all flows and nothing is left behind.
// (Quarantine copies on a full disk come with issue 3.)
public sealed class DiskFullTests(ITestOutputHelper output)
{
    [TmpfsFact]
    public async Task Full_temp_folder_refuses_large_mail_with_4xx_and_small_mail_keeps_flowing()
    {
        await using var downstream = TestSmtpServer.Start();
        var config = new GatewayIni(GatewayIni.NewRoot(), GatewayIni.FreePort(), downstream.Port);
        config.Set("limits", "memory_threshold", "256K");
        Directory.CreateDirectory(config.SpoolFolder);
        Tmpfs.Mount(config.SpoolFolder, "4m");
        try
        {
            await using var gateway = await GatewayProcess.StartAsync(output, config, downstream);

            // 1. Larger than the whole disk: the spill runs out of room half-way and is refused.
            var huge = await Traffic.SendAsync(gateway.Port, "disk-huge", Traffic.Message("disk-huge", 6 << 20));
            output.WriteLine($"6 MiB message on a 4 MiB temp_folder: {huge}");
            Assert.True(huge.Reply is { Class: 4 }, huge.ToString());

            // 2. The refused spill gave its room back: mail that fits in memory flows, attachments
            // are unpacked and scanned, a virus in an archive is found.
            var zip = Bombs.NestedZip(1, "a small attachment"u8.ToArray());
            var infectedZip = Bombs.NestedZip(1, System.Text.Encoding.ASCII.GetBytes(TestSignatures.Eicar));
            var flowing = await Traffic.RunAsync(16, 4, i => i % 2 == 0
                ? Traffic.SendAsync(gateway.Port, $"disk-small-{i}", Traffic.Message($"disk-small-{i}", 8 * 1024))
                : Traffic.SendAsync(gateway.Port, $"disk-zip-{i}", Bombs.WithAttachment($"disk-zip-{i}", "small.zip", zip)));
            output.WriteLine($"after the refused spill: {Traffic.Summary(flowing)}");
            Assert.All(flowing, a => Assert.True(a.Accepted, a.ToString()));
            var found = await Traffic.SendAsync(gateway.Port, "disk-virus-room", Bombs.WithAttachment("disk-virus-room", "eicar.zip", infectedZip));
            Assert.True(found.Reply is { Code: 554 }, found.ToString());

            // 3. The disk is full (another tenant's file). libclamav cannot unpack anything there, so
            // no scan can be trusted: every message is deferred with 4xx, a virus is never let through.
            var filler = Path.Combine(config.SpoolFolder, "filler");
            Tmpfs.Fill(filler);
            var full = await Traffic.RunAsync(12, 4, i => (i % 3) switch
            {
                0 => Traffic.SendAsync(gateway.Port, $"full-large-{i}", Traffic.Message($"full-large-{i}", 600 * 1024)),
                1 => Traffic.SendAsync(gateway.Port, $"full-zip-{i}", Bombs.WithAttachment($"full-zip-{i}", "small.zip", zip)),
                _ => Traffic.SendAsync(gateway.Port, $"full-small-{i}", Traffic.Message($"full-small-{i}", 8 * 1024)),
            });
            var virus = await Traffic.SendAsync(gateway.Port, "full-virus", Bombs.WithAttachment("full-virus", "eicar.zip", infectedZip));
            output.WriteLine($"disk full: {Traffic.Summary(full)}; EICAR in a zip: {virus}");
            Assert.All(full.Append(virus), a => Assert.True(a.Reply is { Class: 4 }, $"on a full disk: {a}"));

            // 4. Room again: large mail flows.
            File.Delete(filler);
            var again = await Traffic.RunAsync(4, 2, i => Traffic.SendAsync(gateway.Port, $"disk-again-{i}", Traffic.Message($"disk-again-{i}", 600 * 1024)));
            output.WriteLine($"room again: {Traffic.Summary(again)}");
            Assert.All(again, a => Assert.True(a.Accepted, a.ToString()));

            var all = flowing.Concat(full).Concat(again).Append(huge).Append(virus).Append(found).ToList();
            // Accepted means delivered exactly once; refused means not delivered.
            await downstream.Messages.WaitForCountAsync(all.Count(a => a.Accepted), TimeSpan.FromSeconds(20), "the accepted messages");
            Assert.All(all, a => Assert.Equal(a.Accepted ? 1 : 0, Traffic.CopiesOf(downstream, a.Id)));
            await gateway.StopAsync(); // temp_folder empty
        }
        finally
        {
            Tmpfs.Unmount(config.SpoolFolder);
            Directory.Delete(config.Root, recursive: true);
        }
    }
}

// A [Fact] that is skipped, saying why, where a tmpfs cannot be mounted (not root, no mount
// privilege in the container).
public sealed class TmpfsFactAttribute : FactAttribute
{
    public TmpfsFactAttribute()
    {
        if (Tmpfs.Unavailable.Value is { } reason)
        {
            Skip = $"cannot mount a tmpfs here ({reason}); the disk-full test needs one";
        }
    }
}

public static class Tmpfs
{
    public static readonly Lazy<string?> Unavailable = new(() =>
    {
        var probe = Directory.CreateTempSubdirectory("portcullis-tmpfs-probe-").FullName;
        try
        {
            Mount(probe, "64k");
            Unmount(probe);
            return null;
        }
        catch (Exception e)
        {
            return e.Message;
        }
        finally
        {
            Directory.Delete(probe);
        }
    });

    public static void Mount(string path, string size) => Run("mount", "-t", "tmpfs", "-o", $"size={size},mode=0700", "tmpfs", path);

    public static void Unmount(string path) => Run("umount", path);

    // Writes zeros until the file system says it is full.
    public static void Fill(string file)
    {
        var block = new byte[4096];
        using var stream = new FileStream(file, FileMode.CreateNew, FileAccess.Write, FileShare.None, 0);
        try
        {
            while (true)
            {
                stream.Write(block);
            }
        }
        catch (IOException)
        {
            // ENOSPC: full.
        }
    }

    private static void Run(string tool, params string[] arguments)
    {
        var start = new ProcessStartInfo(tool) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start) ?? throw new InvalidOperationException($"cannot start {tool}");
        var errors = process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{tool} {string.Join(' ', arguments)}: exit {process.ExitCode}: {errors.Trim()}");
        }
    }
}
