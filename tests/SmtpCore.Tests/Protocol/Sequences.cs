using System.Buffers;

namespace Portcullis.SmtpCore.Tests.Protocol;

// Builds multi-segment ReadOnlySequences so every parser test also runs over the worst chunking.
internal static class Sequences
{
    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, Segment? previous)
        {
            Memory = memory;
            if (previous is not null)
            {
                RunningIndex = previous.RunningIndex + previous.Memory.Length;
                previous.Next = this;
            }
        }
    }

    public static ReadOnlySequence<byte> OneBytePerSegment(byte[] bytes)
    {
        if (bytes.Length == 0) return ReadOnlySequence<byte>.Empty;
        Segment first = new(bytes.AsMemory(0, 1), null), last = first;
        for (int i = 1; i < bytes.Length; i++) last = new Segment(bytes.AsMemory(i, 1), last);
        return new ReadOnlySequence<byte>(first, 0, last, 1);
    }

    // The input whole, split into one-byte segments.
    public static IEnumerable<(string Shape, ReadOnlySequence<byte> Sequence)> Shapes(byte[] bytes)
    {
        yield return ("contiguous", new ReadOnlySequence<byte>(bytes));
        yield return ("one byte per segment", OneBytePerSegment(bytes));
    }
}
