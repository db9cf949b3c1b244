using System.Buffers;
using System.Text;
using FsCheck;
using FsCheck.Fluent;
using Portcullis.SmtpCore.Protocol;

namespace Portcullis.SmtpCore.Tests.Fuzz;

// Hostile byte streams and the ways they can arrive. Unlike the Protocol properties (which bias
// towards a handful of bytes to compare against a reference), these mix whole SMTP fragments with
// every byte value, NULs, invalid UTF-8 and over-long lines, so the checks are about what must
// never happen whatever arrives: an exception, a command from an unfinished line, a message that
// ends anywhere but at CRLF.CRLF, a bare CR or LF in what is passed on.
public sealed record Chunked(byte[] Input, int[] Cuts)
{
    public override string ToString() =>
        $"{Protocol.Escapes.Show(Input.AsSpan(0, Math.Min(Input.Length, 400)))}{(Input.Length > 400 ? "..." : "")} ({Input.Length} bytes) " +
        $"cuts=[{string.Join(',', Cuts.Take(40))}{(Cuts.Length > 40 ? $",... {Cuts.Length} cuts" : "")}]";

    // The input split at the cuts, in order; empty pieces kept (a zero-byte read is legal).
    public IEnumerable<byte[]> Pieces()
    {
        int from = 0;
        foreach (int cut in Cuts.Append(Input.Length))
        {
            yield return Input[from..cut];
            from = cut;
        }
    }

    // The whole input as one ReadOnlySequence whose segment borders are the cuts.
    public ReadOnlySequence<byte> AsSequence() => Segments.Build(Pieces().ToArray());
}

public static class FuzzArbitraries
{
    private static readonly string[] Fragments =
    [
        "EHLO client.example\r\n", "HELO x\r\n", "MAIL FROM:<a@b.example>\r\n", "MAIL FROM:<>\r\n",
        "RCPT TO:<c@d.example>\r\n", "RCPT TO:<postmaster>\r\n", "DATA\r\n", "BDAT 5\r\n", "BDAT 3 LAST\r\n",
        "BDAT 0 LAST\r\n", "RSET\r\n", "NOOP\r\n", "VRFY x\r\n", "HELP\r\n", "STARTTLS\r\n", "AUTH PLAIN\r\n",
        "mail from:<A@B>\r\n", "DATA x\r\n", "XYZZY\r\n", "MAIL FROM:<a@b> SIZE=99999999999999999999\r\n",
        "MAIL FROM:<a@b> BODY=8BITMIME SMTPUTF8\r\n", "RCPT TO:<\u00e9@b.example>\r\n",
        "hello\r\n", ".\r\n", "\r\n.\r\n", "..\r\n", ".", "\r", "\n", "\r\n", "\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n",
        " ", ":", "<", ">", "@", "\t", "MAIL", "FROM:",
    ];

    private static readonly byte[][] Hostile =
    [
        [0x00], [0x00, 0x0d, 0x0a], [0xff, 0xfe], [0xc3, 0x28], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80],
        [0xe2, 0x80, 0xa8], [0x80], [0x1b, 0x5b, 0x32, 0x4a], [0x7f],
    ];

    private static Gen<byte[]> Fragment() => Gen.Frequency(
        (6, Gen.Elements(Fragments).Select(f => Encoding.UTF8.GetBytes(f))),
        (2, Gen.Elements(Hostile)),
        (3, Gen.ArrayOf(Gen.Choose(0, 255).Select(i => (byte)i))),
        (1, Gen.Choose(100, 3000).Select(n => Enumerable.Repeat((byte)'A', n).ToArray())));

    public static Gen<byte[]> Stream() =>
        Gen.ListOf(Fragment()).Select(parts => parts.SelectMany(p => p).ToArray());

    private static Gen<Chunked> ChunkedGen(Gen<byte[]> input) =>
        from bytes in input
        from cuts in Gen.Frequency(
            (3, Gen.ArrayOf(Gen.Choose(0, bytes.Length))),
            (1, Gen.Constant(Enumerable.Range(1, Math.Max(0, bytes.Length - 1)).ToArray()))) // one byte at a time
        select new Chunked(bytes, cuts.Order().ToArray());

    public static Arbitrary<Chunked> Chunked() => ChunkedGen(Stream()).ToArbitrary();
}

internal static class Segments
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

    public static ReadOnlySequence<byte> Build(byte[][] pieces)
    {
        if (pieces.Length == 0) return ReadOnlySequence<byte>.Empty;
        Segment first = new(pieces[0], null), last = first;
        foreach (var piece in pieces.Skip(1)) last = new Segment(piece, last);
        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }
}
