using System.Text.RegularExpressions;
using Xunit;

namespace Portcullis.EndToEnd.Harness;

// What a clean message must look like at the downstream: the sent bytes, untouched, below a
// block of header fields the gateway prepended (Received, X-Virus-Scanned, ...).
public static class Delivered
{
    // Asserts that `delivered` is `sent` with only a header block put in front, and returns that
    // block's fields as (name, value) with folding kept.
    public static IReadOnlyList<(string Name, string Value)> SplitPrepended(byte[] delivered, byte[] sent)
    {
        var prefixLength = delivered.Length - sent.Length;
        if (prefixLength <= 0 || !delivered.AsSpan(prefixLength).SequenceEqual(sent))
        {
            Assert.Fail($"the delivered message ({delivered.Length} bytes) is not the sent one ({sent.Length} bytes) " +
                        $"with headers added in front.\n{FirstDifference(delivered, sent)}");
        }

        var prefix = SmtpBytes.Text(delivered.AsSpan(0, prefixLength));
        Assert.True(prefix.EndsWith("\r\n", StringComparison.Ordinal), $"the added header block does not end with CRLF: {prefix}");
        var fields = new List<(string Name, string Value)>();
        foreach (var line in prefix[..^2].Split("\r\n"))
        {
            Assert.False(line.Contains('\r') || line.Contains('\n'), $"bare CR/LF in an added header: {prefix}");
            if (line.StartsWith(' ') || line.StartsWith('\t'))
            {
                Assert.True(fields.Count > 0, $"the added block starts with a continuation line: {prefix}");
                fields[^1] = (fields[^1].Name, fields[^1].Value + "\r\n" + line);
                continue;
            }

            var colon = line.IndexOf(':');
            Assert.True(colon > 0, $"not a header field line: '{line}' in\n{prefix}");
            fields.Add((line[..colon], line[(colon + 1)..]));
        }

        return fields;
    }

    // The gateway's header block on a clean message: Received (RFC 5321 §4.4) and X-Virus-Scanned,
    // each once, plus any extra names expected (X-Virus-Status for on_error=pass).
    public static async Task AssertGatewayHeaders(IReadOnlyList<(string Name, string Value)> fields, params string[] extra)
    {
        var names = fields.Select(f => f.Name).Order(StringComparer.OrdinalIgnoreCase).ToArray();
        var expected = new[] { "Received", "X-Virus-Scanned" }.Concat(extra).Order(StringComparer.OrdinalIgnoreCase).ToArray();
        Assert.True(names.SequenceEqual(expected, StringComparer.OrdinalIgnoreCase),
            $"added headers were [{string.Join(", ", names)}], expected [{string.Join(", ", expected)}]");

        var received = Unfold(fields.Single(f => f.Name.Equals("Received", StringComparison.OrdinalIgnoreCase)).Value);
        Assert.Matches(new Regex(@"\bby gw\.test\b"), received);
        Assert.Matches(new Regex(@";\s*\S.*\d{4}"), received); // "; <date-time>" ends the field

        var scanned = Unfold(fields.Single(f => f.Name.Equals("X-Virus-Scanned", StringComparison.OrdinalIgnoreCase)).Value).Trim();
        Assert.Matches(new Regex(@"^portcullis \S+, ClamAV \d+(\.\d+)+/\d+"), scanned);
        var version = Regex.Match(await PortcullisBinary.VersionAsync(), @"\d+\.\d+\.\d+[^\s,]*");
        if (version.Success)
        {
            Assert.StartsWith($"portcullis {version.Value},", scanned);
        }
    }

    public static string Unfold(string value) => value.Replace("\r\n", "");

    private static string FirstDifference(byte[] delivered, byte[] sent)
    {
        // Align the ends, as if only a prefix had been added, and show where they part.
        var d = delivered.Length - 1;
        var s = sent.Length - 1;
        while (d >= 0 && s >= 0 && delivered[d] == sent[s])
        {
            d--;
            s--;
        }

        string Around(byte[] bytes, int at) =>
            SmtpBytes.Text(bytes.AsSpan(Math.Max(0, at - 60), Math.Min(bytes.Length, at + 60) - Math.Max(0, at - 60)))
                .Replace("\r", "\\r").Replace("\n", "\\n");
        return s < 0
            ? "the sent bytes are all there at the end, but nothing was added in front"
            : $"counting from the end, they differ at sent offset {s} / delivered offset {d}:\n" +
              $"  sent:      ...{Around(sent, s)}...\n  delivered: ...{(d >= 0 ? Around(delivered, d) : "(start)")}...";
    }
}
