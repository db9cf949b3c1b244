// AFL++ targets over SmtpCore's parsers, run by build/fuzz.sh through SharpFuzz. Each target
// checks the same invariants as the FsCheck properties in tests/SmtpCore.Tests/Fuzz and throws
// (a crash for AFL) when one breaks; any other exception escaping a parser is a crash too.
//   command  the input is a byte stream of command lines, cut into pieces by its own bytes
//   data     first byte: bit 0 reject/normalize, bit 1 BDAT/DATA; the rest is message content
//   path     the input, as UTF-8, is a MAIL/RCPT argument
using System.Buffers;
using System.Text;
using Portcullis.SmtpCore.Protocol;
using SharpFuzz;

namespace Portcullis.Fuzz;

public static class Program
{
    public static int Main(string[] args)
    {
        Action<byte[]> target = args.FirstOrDefault() switch
        {
            "command" => Command,
            "data" => Data,
            "path" => Path,
            _ => null!,
        };
        if (target is null)
        {
            Console.Error.WriteLine("usage: Portcullis.Fuzz command|data|path [file]  (stdin / AFL++ when no file)");
            return 64;
        }

        if (args.Length > 1)
        {
            target(File.ReadAllBytes(args[1])); // replay one input, e.g. a crash AFL++ saved
            return 0;
        }

        Fuzzer.OutOfProcess.Run(stream =>
        {
            using var memory = new MemoryStream();
            stream.CopyTo(memory);
            target(memory.ToArray());
        });
        return 0;
    }

    private sealed class InvariantException(string message) : Exception(message);

    private static void Check(bool condition, string what)
    {
        if (!condition) throw new InvariantException(what);
    }

    private const int Cap = 512;

    private static void Command(byte[] input)
    {
        // The session's read loop: append a piece, parse every whole line, keep the rest. Piece
        // sizes come from the input itself so AFL explores chunkings too.
        var buffer = new List<byte>();
        int at = 0, step = 0;
        while (at < input.Length)
        {
            int size = 1 + input[step++ % input.Length] % 97;
            buffer.AddRange(input.AsSpan(at, Math.Min(size, input.Length - at)).ToArray());
            at += size;
            while (true)
            {
                var bytes = buffer.ToArray();
                var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(bytes));
                var status = SmtpCommandParser.TryParse(ref reader, Cap, out var command);
                if (status == ParseStatus.Incomplete)
                {
                    Check(reader.Consumed == 0, "Incomplete consumed bytes");
                    Check(Array.IndexOf(bytes, (byte)'\n') < 0 && bytes.Length < Cap, "Incomplete with a whole line or a full cap");
                    break;
                }

                var line = bytes.AsSpan(0, (int)reader.Consumed);
                if (status == ParseStatus.LineTooLong) return;
                Check(line.Length <= Cap && line[^1] == '\n' && line.IndexOf((byte)'\n') == line.Length - 1, "a result that is not one line");
                if (status == ParseStatus.Complete)
                {
                    Check(line.Length >= 2 && line[^2] == '\r', "a command without CRLF");
                    Check(command.VerbText.All(c => c is >= '!' and <= '~'), "unprintable verb text");
                }
                else
                {
                    Check(status == ParseStatus.BareLineFeed && (line.Length == 1 || line[^2] != '\r'), "BareLineFeed for a CRLF line");
                }

                buffer.RemoveRange(0, line.Length);
            }
        }
    }

    private static void Data(byte[] input)
    {
        if (input.Length == 0) return;
        var policy = (input[0] & 1) == 0 ? BareNewlinePolicy.Normalize : BareNewlinePolicy.Reject;
        bool dot = (input[0] & 2) == 0;
        var content = input.AsSpan(1);
        var output = new ArrayBufferWriter<byte>();
        var reader = new DataReader(output, long.MaxValue, policy, dot);

        int consumed = 0;
        for (int i = 0; i < content.Length && !reader.IsComplete;)
        {
            int size = 1 + content[i] % 13; // chunking taken from the content
            var piece = content.Slice(i, Math.Min(size, content.Length - i));
            int used = reader.Process(piece);
            Check(reader.IsComplete || used == piece.Length, "an unfinished reader left input");
            consumed += used;
            i += piece.Length;
        }

        if (dot)
        {
            byte[] withCommandEnd = [.. "\r\n"u8, .. content];
            int end = withCommandEnd.AsSpan().IndexOf("\r\n.\r\n"u8);
            Check(reader.IsComplete == end >= 0, "DATA completion does not match CRLF.CRLF");
            if (end >= 0) Check(consumed == end + 3, "DATA ended somewhere else than the first CRLF.CRLF");
        }
        else
        {
            Check(!reader.IsComplete, "BDAT content ended by itself");
            reader.Finish();
        }

        if (reader.Error != DataError.None) return;
        var written = output.WrittenSpan;
        for (int i = 0; i < written.Length; i++)
        {
            Check(written[i] != '\r' || (i + 1 < written.Length && written[i + 1] == '\n'), "bare CR passed on");
            Check(written[i] != '\n' || (i > 0 && written[i - 1] == '\r'), "bare LF passed on");
        }

        // Stuffed again as the downstream client does, a strict reader sees exactly one message.
        var wire = new ArrayBufferWriter<byte>();
        for (int i = 0; i < written.Length; i++)
        {
            if (written[i] == '.' && (i == 0 || written[i - 1] == '\n')) wire.Write("."u8);
            wire.Write(written.Slice(i, 1));
        }

        if (written.Length > 0 && !written.EndsWith("\r\n"u8)) wire.Write("\r\n"u8);
        wire.Write(".\r\n"u8);
        var again = new ArrayBufferWriter<byte>();
        var strict = new DataReader(again, long.MaxValue, BareNewlinePolicy.Reject, dotTransparency: true);
        Check(strict.Process(wire.WrittenSpan) == wire.WrittenCount && strict.IsComplete && strict.Error == DataError.None,
            "the forwarded message does not end exactly at its terminator");
    }

    private static void Path(byte[] input)
    {
        string argument = Encoding.UTF8.GetString(input);
        foreach (var (prefix, allowNull) in new[] { ("FROM:", true), ("TO:", false) })
        {
            if (PathArgumentParser.TryParse(argument, prefix, allowNull, out var result, out _))
            {
                string wire = result.Path.ToString();
                Check(!wire.Contains('\uFFFD'), "an address with invalid UTF-8 was accepted");
                Check(!wire.Any(char.IsControl), "an address with a control character was accepted");
            }
        }
    }
}
