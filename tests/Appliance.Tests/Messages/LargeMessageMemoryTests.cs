using System.Buffers;
using Portcullis.Appliance.Messages;
using Xunit;

namespace Portcullis.Appliance.Tests.Messages;

// A message past memory_threshold gives the process's memory back when it is gone: a decommitting
// gen-2 collection and malloc_trim run once no large message is in flight any more.
public sealed class LargeMessageMemoryTests : IDisposable
{
    private readonly string folder = Directory.CreateTempSubdirectory("portcullis-large-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    [Fact]
    public void Disposing_the_last_large_message_returns_memory_once()
    {
        var returns = LargeMessageMemory.Returns;
        var collections = GC.CollectionCount(2);
        var first = new MessageBuffer(memoryThreshold: 1024, folder);
        var second = new MessageBuffer(memoryThreshold: 1024, folder);
        first.Write(new byte[4096]);
        second.Write(new byte[4096]);
        Assert.True(first.IsSpilled && second.IsSpilled);

        first.Dispose();
        second.Dispose();

        // The return runs on the thread pool; wait for it, bounded.
        Assert.True(SpinWait.SpinUntil(() => LargeMessageMemory.Returns > returns, TimeSpan.FromSeconds(30)));
        Assert.True(GC.CollectionCount(2) > collections);
    }

    [Fact]
    public void A_message_of_a_megabyte_in_memory_counts_as_large()
    {
        var returns = LargeMessageMemory.Returns;
        var message = new MessageBuffer(memoryThreshold: 8 << 20, folder);
        message.Write(new byte[LargeMessageMemory.Segments * MessageBuffer.SegmentSize]);
        Assert.False(message.IsSpilled);

        message.Dispose();

        Assert.True(SpinWait.SpinUntil(() => LargeMessageMemory.Returns > returns, TimeSpan.FromSeconds(30)));
    }
}
