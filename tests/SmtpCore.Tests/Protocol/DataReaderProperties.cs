using System.Text;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Portcullis.SmtpCore.Protocol;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Protocol;

public sealed record DataCase(byte[] Input, int[] Cuts, long MaxSize, BareNewlinePolicy Policy, bool Dot)
{
    public override string ToString() =>
        $"{Escapes.Show(Input)} cuts=[{string.Join(',', Cuts)}] max={MaxSize} {Policy} {(Dot ? "DATA" : "BDAT")}";
}

public static class DataCaseArbitrary
{
    public static Arbitrary<DataCase> DataCase()
    {
        // Biased to the bytes that matter for line ends, stuffing and the terminator.
        var octet = Gen.Frequency(
            (4, Gen.Constant((byte)'.')), (4, Gen.Constant((byte)'\r')), (4, Gen.Constant((byte)'\n')),
            (3, Gen.Constant((byte)'a')), (1, Gen.Constant((byte)0x80)));
        var gen =
            from input in Gen.ArrayOf(octet)
            from cuts in Gen.ArrayOf(Gen.Choose(0, input.Length))
            from max in Gen.Frequency((1, Gen.Choose(0, 40).Select(m => (long)m)), (2, Gen.Constant(long.MaxValue)))
            from policy in Gen.Elements(BareNewlinePolicy.Normalize, BareNewlinePolicy.Reject)
            from dot in Gen.Frequency((3, Gen.Constant(true)), (1, Gen.Constant(false)))
            select new DataCase(input, cuts.Distinct().Order().ToArray(), max, policy, dot);
        return gen.ToArbitrary();
    }
}

public class DataReaderProperties
{
    // The reference: RFC 5321 §4.1.1.4/§4.5.2 and RFC 3030 read byte by byte over the whole input,
    // looking ahead instead of keeping state. A line starts at the beginning of DATA content and after
    // each CRLF. At a line start, "." CR LF ends the data; any other "." there is dropped. CR LF is a
    // line end. Any other CR, and any LF, is a bare newline: CRLF in its place (Normalize) or the
    // error BareNewline (Reject). Content beyond MaxSize octets is the error TooLarge. The first error
    // sticks; the input is still read to the end. Bytes whose meaning depends on input not seen yet
    // are held (nothing is emitted for them). BDAT has no line starts and ends only at Finish, where a
    // held CR is bare.
    internal static DataOutcome Reference(DataCase c)
    {
        byte[] input = c.Input;
        var output = new List<byte>();
        long size = 0;
        var error = DataError.None;
        bool done = false, heldCr = false, lineStart = c.Dot;

        void Content(byte b)
        {
            size++;
            if (error != DataError.None) return;
            if (size > c.MaxSize) error = DataError.TooLarge;
            else output.Add(b);
        }
        void Bare()
        {
            if (c.Policy == BareNewlinePolicy.Normalize) { Content((byte)'\r'); Content((byte)'\n'); }
            else if (error == DataError.None) error = DataError.BareNewline;
        }
        byte? At(int k) => k < input.Length ? input[k] : null;

        int i = 0;
        while (i < input.Length)
        {
            byte b = input[i];
            if (lineStart && b == '.')
            {
                if (At(i + 1) is null || (At(i + 1) == '\r' && At(i + 2) is null)) { i = input.Length; break; }
                if (At(i + 1) == '\r' && At(i + 2) == '\n') { i += 3; done = true; break; }
                i++; // a stuffed dot
                lineStart = false;
                continue;
            }
            lineStart = false;
            if (b == '\r')
            {
                if (At(i + 1) is null) { heldCr = true; i++; break; }
                if (At(i + 1) == '\n') { Content((byte)'\r'); Content((byte)'\n'); i += 2; lineStart = c.Dot; continue; }
                Bare();
                i++;
                continue;
            }
            if (b == '\n') { Bare(); i++; continue; }
            Content(b);
            i++;
        }
        if (!c.Dot)
        {
            if (heldCr) Bare();
            done = true; // Finish()
        }
        string written = error == DataError.TooLarge ? "(discarded)" : Encoding.Latin1.GetString(output.ToArray());
        return new DataOutcome(written, done, i, error, size);
    }

    [Property(MaxTest = 3000, Arbitrary = [typeof(DataCaseArbitrary)])]
    public void Reader_agrees_with_the_reference_on_any_chunking(DataCase c)
    {
        var expected = Reference(c);
        var actual = DataFeed.Run(c.Input, c.Cuts, c.MaxSize, c.Policy, c.Dot);
        Assert.Equal(expected, actual);
    }

    [Property(MaxTest = 3000, Arbitrary = [typeof(DataCaseArbitrary)])]
    public void Normalized_output_has_only_CRLF_line_ends(DataCase c)
    {
        var outcome = DataFeed.Run(c.Input, c.Cuts, long.MaxValue, BareNewlinePolicy.Normalize, c.Dot);
        Assert.Equal(DataError.None, outcome.Error);
        DataReaderTests.AssertOnlyCrlf(outcome.Output);
    }

    [Fact]
    public void Reference_sanity()
    {
        // The reference itself on the cases everyone agrees on.
        var r = Reference(new DataCase("a\r\n..b\r\n.\r\nX"u8.ToArray(), [], long.MaxValue, BareNewlinePolicy.Normalize, true));
        Assert.Equal(new DataOutcome("a\r\n.b\r\n", true, 11, DataError.None, 7), r);
        r = Reference(new DataCase("a\n.\r\n"u8.ToArray(), [], long.MaxValue, BareNewlinePolicy.Reject, true));
        Assert.Equal(new DataOutcome("a", false, 5, DataError.BareNewline, 4), r);
    }
}
