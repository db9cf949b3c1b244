using Portcullis.SmtpCore.Protocol;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Protocol;

// RFC 6531 widens atext and domain labels to UTF-8, not to spaces, separators or controls: such a
// path is a syntax error (501), whichever side of the '@' it is on (issue 11, item 10).
public class SmtpPathUnicodeTests
{
    [Theory]
    [InlineData("<victim@example.org\u00A0>")]    // NO-BREAK SPACE
    [InlineData("<victim@\u00A0example.org>")]
    [InlineData("<victim@example.org\u3000>")]    // IDEOGRAPHIC SPACE
    [InlineData("<victim@example.org\u0085>")]    // NEXT LINE (C1 control)
    [InlineData("<victim@example.org\u2028>")]    // LINE SEPARATOR
    [InlineData("<victim@exam\u200Bple.org>")]    // ZERO WIDTH SPACE (format)
    [InlineData("<victim@example.org\u202E>")]    // RIGHT-TO-LEFT OVERRIDE
    [InlineData("<victim@example.org.\u00A0>")]
    [InlineData("<vic\u00A0tim@example.org>")]
    [InlineData("<victim\u0085@example.org>")]
    [InlineData("<@relay\u00A0.example:victim@example.org>")]
    public void Unicode_spaces_separators_and_controls_are_refused(string text) =>
        Assert.False(SmtpPath.TryParse(text, allowNull: false, out _, out _));

    [Theory]
    [InlineData("<jösé@exämple.org>")]
    [InlineData("<用户@例子.广告>")]
    [InlineData("<θσερ@παράδειγμα.δοκιμή>")]
    [InlineData("<user@xn--exmple-cua.org>")]
    [InlineData("<पेटर@उदाहरण.परीक्षा>")]   // combining marks
    public void Internationalised_addresses_still_parse(string text) =>
        Assert.True(SmtpPath.TryParse(text, allowNull: false, out _, out var error), error);
}
