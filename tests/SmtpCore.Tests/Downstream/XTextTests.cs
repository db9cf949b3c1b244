using Portcullis.SmtpCore.Downstream;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Downstream;

public class XTextTests
{
    // RFC 3461 §4: '+', '=', controls, space and non-ASCII become +XX of their UTF-8 octets.
    [Theory]
    [InlineData("", "")]
    [InlineData("mx.example.org", "mx.example.org")]
    [InlineData("[192.0.2.1]", "[192.0.2.1]")]
    [InlineData("a+b=c", "a+2Bb+3Dc")]
    [InlineData("sp ace", "sp+20ace")]
    [InlineData("caf\u00e9", "caf+C3+A9")]
    [InlineData("tab\there", "tab+09here")]
    [InlineData("~!\"#$%&'()*,-./:;<>?@[\\]^_`{|}", "~!\"#$%&'()*,-./:;<>?@[\\]^_`{|}")]
    public void EncodesWhatIsNotPlainPrintableAscii(string value, string expected) =>
        Assert.Equal(expected, XText.Encode(value));

    [Fact]
    public void APlainValueIsReturnedAsItIs()
    {
        var value = "client.example.org";
        Assert.Same(value, XText.Encode(value));
    }
}
