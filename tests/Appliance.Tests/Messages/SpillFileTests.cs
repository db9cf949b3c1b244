using System.Collections.Concurrent;
using Portcullis.Appliance.Messages;
using Xunit;

namespace Portcullis.Appliance.Tests.Messages;

// A spill file must never exist under a name in temp_folder, not even for a moment: a kill -9 in
// that moment would leave the message on disk (issue 11, item 9).
public sealed class SpillFileTests : IDisposable
{
    private readonly string _temp = Directory.CreateTempSubdirectory("portcullis-spill-").FullName;

    public void Dispose() => Directory.Delete(_temp, recursive: true);

    [Fact]
    public void A_spilled_message_never_has_a_name_in_the_temp_folder()
    {
        var named = new ConcurrentQueue<string>();
        using var markerSeen = new ManualResetEventSlim();
        using var watcher = new FileSystemWatcher(_temp) { NotifyFilter = NotifyFilters.FileName };
        // inotify reports in order: once the marker's creation arrives, any earlier one has too.
        watcher.Created += (_, e) =>
        {
            if (e.Name == "marker") markerSeen.Set();
            else named.Enqueue(e.Name ?? "");
        };
        watcher.EnableRaisingEvents = true;

        var body = new byte[300_000];
        Random.Shared.NextBytes(body);
        using (var buffer = new MessageBuffer(1000, _temp))
        {
            var span = buffer.GetSpan(body.Length);
            body.CopyTo(span);
            buffer.Advance(body.Length);
            Assert.True(buffer.IsSpilled);
            var back = new byte[body.Length];
            Assert.Equal(body.Length, buffer.Read(0, back));
            Assert.Equal(body, back);
        }

        File.WriteAllText(Path.Combine(_temp, "marker"), "");
        Assert.True(markerSeen.Wait(TimeSpan.FromSeconds(30)), "the watcher never saw the marker");
        Assert.Empty(named);
    }

    [Fact]
    public void Stale_spill_files_are_removed_and_nothing_else()
    {
        File.WriteAllText(Path.Combine(_temp, "portcullis-0123456789abcdef01234567.spill"), "old mail");
        File.WriteAllText(Path.Combine(_temp, "portcullis-ffff.spill"), "old mail");
        File.WriteAllText(Path.Combine(_temp, "other.spill"), "keep");
        File.WriteAllText(Path.Combine(_temp, "portcullis-notes.txt"), "keep");

        Assert.Equal(2, MessageBuffer.RemoveStaleSpillFiles(_temp));
        Assert.Equal(["other.spill", "portcullis-notes.txt"], Directory.GetFiles(_temp).Select(f => Path.GetFileName(f)!).Order().ToArray());
    }
}
